"""Video Sparse Attention in the base model's video self-attention (beyond the paper).

The paper (4.5) uses VSA in the refiner only; FastVideo trains VSA into base models. This module
swaps the joint self-attention of every video block for skyreels-refiner-vsa's
``vsa_attention_stage`` (VSA over the grid tokens; text and reference tokens stay dense) with one
``VideoSparseAttention`` per block, whose gate starts at zero. The block parameters are untouched,
so a dense checkpoint loads as it is; the audio branch, the text cross-attention (eq. 4) and the
audio-video exchange (eq. 5) stay dense.

``VideoSelfAttention.DENSE`` (the default) swaps nothing: the dense path is the unchanged code, bit
for bit. The choice is stored in the transformer's config.json (``SkyReelsV4Transformer``).
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Any

from torch import nn

from skyreels_mmdit_blocks import JointAudioVideoTransformer
from skyreels_refiner_vsa import (
    GridLayout,
    GridLayoutSlot,
    VideoSparseAttention,
    VSAConfig,
    install_vsa_attention_stages,
)

__all__ = [
    "VideoSelfAttention",
    "VideoSelfAttentionConfig",
    "enable_video_sparse_attention",
    "video_sparse_layout",
]


class VideoSelfAttention(str, enum.Enum):
    """Kernel of the video blocks' joint self-attention."""

    DENSE = "dense"
    VSA = "vsa"


@dataclass(frozen=True, kw_only=True)
class VideoSelfAttentionConfig:
    """``kind``: dense (default, the paper) or VSA; ``vsa``: its block selection and kernels (VSA only)."""

    kind: VideoSelfAttention = VideoSelfAttention.DENSE
    vsa: VSAConfig | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, VideoSelfAttention):
            allowed = [k.value for k in VideoSelfAttention]
            raise TypeError(f"kind: expected one of {allowed}, got {self.kind!r}")
        if self.vsa is not None and not isinstance(self.vsa, VSAConfig):
            raise TypeError(f"vsa: expected a skyreels_refiner_vsa.VSAConfig, got {type(self.vsa).__name__}")
        if self.kind is VideoSelfAttention.DENSE and self.vsa is not None:
            raise ValueError("vsa: only used with kind='vsa'; leave it None for dense attention")
        if self.kind is VideoSelfAttention.VSA and self.vsa is None:
            object.__setattr__(self, "vsa", VSAConfig())


def _recording_embed(embed: Any, slot: GridLayoutSlot, *args: Any, **kwargs: Any) -> Any:
    inputs = embed(*args, **kwargs)
    slot.layout = GridLayout(inputs.num_reference, tuple(inputs.grid))
    return inputs


def enable_video_sparse_attention(
    transformer: JointAudioVideoTransformer, config: VSAConfig
) -> nn.ModuleList:
    """Run every video block's joint self-attention through VSA (zero-initialised gates).

    Registers the ``VideoSparseAttention`` modules as ``transformer.video_vsa`` (their gates are
    weights: ``video_vsa.{i}.gate.*``) on the transformer's device and dtype, and returns them.
    Raises ``ValueError`` if already enabled.
    """
    if not isinstance(transformer, JointAudioVideoTransformer):
        raise TypeError(
            f"transformer: expected a JointAudioVideoTransformer, got {type(transformer).__name__}"
        )
    if not isinstance(config, VSAConfig):
        raise TypeError(f"config: expected a VSAConfig, got {type(config).__name__}")
    if hasattr(transformer, "video_vsa"):
        raise ValueError("transformer: video sparse attention is already enabled")
    branch = transformer.video
    parameter = next(branch.parameters())
    modules = nn.ModuleList(
        VideoSparseAttention(dim=branch.config.dim, num_heads=branch.config.num_heads, config=config)
        for _ in range(branch.config.num_blocks)
    ).to(device=parameter.device, dtype=parameter.dtype)
    transformer.video_vsa = modules
    slot = GridLayoutSlot()
    transformer._video_vsa_layout = slot
    branch.embed = functools.partial(_recording_embed, branch.embed, slot)
    install_vsa_attention_stages(branch.blocks, modules, slot)
    return modules


def video_sparse_layout(transformer: JointAudioVideoTransformer) -> GridLayout:
    """Where the current forward's grid tokens sit (``GridLayout``: references, grid), as recorded by
    the video branch's ``embed``; for code that runs VSA blocks its own way (sequence parallelism)."""
    slot = getattr(transformer, "_video_vsa_layout", None)
    if slot is None:
        raise ValueError("transformer: video sparse attention is not enabled")
    return slot.get()
