"""Configuration of one MMDiT branch (video or audio), paper section 3.1."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from skyreels_attention import AttentionConfig
from skyreels_av_rope import RotaryConfig

__all__ = ["MMDiTBranchConfig", "Modality", "TextEmbeddingKind"]


class Modality(enum.Enum):
    """What the branch's latents are: video ``[B, C, T, H, W]`` or audio ``[B, C, L]``."""

    VIDEO = "video"
    AUDIO = "audio"


class TextEmbeddingKind(enum.Enum):
    """How text-encoder states become width-D text tokens."""

    REFINER = "refiner"  # HunyuanVideo's token refiner (timestep-gated self-attention blocks)
    LINEAR = "linear"  # one Linear(text_dim, D)


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


@dataclass(frozen=True, kw_only=True)
class MMDiTBranchConfig:
    """Sizes and choices of an ``MMDiTBranch``.

    Attributes:
        modality: video or audio latents.
        in_channels: latent channels read by the patch embedding (video: Concat(V, I, M) of eq. 7,
            e.g. 16 + 16 + 1 = 33).
        out_channels: channels of the predicted velocity.
        patch_size: video ``(pt, ph, pw)`` (HunyuanVideo ``(1, 2, 2)``), audio ``(p,)``.
        dim, num_heads: width D and attention heads (head dim = D / heads).
        num_dual_blocks, num_single_blocks: M dual-stream then N single-stream blocks.
        text_dim: width of the text-encoder states (4096 for HunyuanVideo's LLM encoder).
        pooled_text_dim: width of the pooled text vector (768 for CLIP), or None for none.
        rope: RoPE axis split and base; ``sum(axes_dims)`` must equal the head dim.
        mlp_ratio: MLP hidden width / D; the width is ``mlp_hidden_dim(D, mlp_ratio)`` (rounded).
        guidance_embedding: embed a distilled-guidance scale (then ``guidance`` is required).
        text_embedding: token refiner (HunyuanVideo) or a single linear projection.
        num_refiner_blocks: token refiner depth (HunyuanVideo: 2).
        text_cross_attention_blocks: indices (0 .. M+N-1, dual blocks first) of the blocks that get
            eq. 4's zero-initialised text cross-attention.
        attention: skyreels-attention backend for every attention in the branch.
        frame_position_frequencies: 0 (the paper): positions through RoPE only. K > 0 (video only,
            beyond the paper): every grid token also gets a zero-initialised projection of K sine /
            cosine frequencies of its row and column in the frame (``FramePositionEmbedding``), so it
            knows where the frame's edges are.
        time_phase_frequencies: 0 (the paper). K > 0 (audio only, beyond the paper): every audio token
            also gets a zero-initialised projection of ``sin / cos(2π m τ)``, ``m = 1..K``, of its time
            ``τ`` in latent frames (``TimePhaseEmbedding``), so it knows where it sits between two video
            latent frames.
    """

    modality: Modality
    in_channels: int
    out_channels: int
    patch_size: tuple[int, ...]
    dim: int
    num_heads: int
    num_dual_blocks: int
    num_single_blocks: int
    text_dim: int
    pooled_text_dim: int | None
    rope: RotaryConfig
    mlp_ratio: float = 4.0
    guidance_embedding: bool = False
    text_embedding: TextEmbeddingKind = TextEmbeddingKind.REFINER
    num_refiner_blocks: int = 2
    text_cross_attention_blocks: tuple[int, ...] = ()
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    frame_position_frequencies: int = 0
    time_phase_frequencies: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.modality, Modality):
            raise TypeError(f"modality must be a Modality; got {self.modality!r}")
        if not isinstance(self.text_embedding, TextEmbeddingKind):
            raise TypeError(f"text_embedding must be a TextEmbeddingKind; got {self.text_embedding!r}")
        if not isinstance(self.rope, RotaryConfig):
            raise TypeError(f"rope must be a skyreels_av_rope.RotaryConfig; got {type(self.rope).__name__}")
        if not isinstance(self.attention, AttentionConfig):
            raise TypeError(f"attention must be a skyreels_attention.AttentionConfig; got {self.attention!r}")
        for name in ("in_channels", "out_channels", "dim", "num_heads", "text_dim"):
            _positive(name, getattr(self, name))
        for name in ("num_dual_blocks", "num_single_blocks", "num_refiner_blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int; got {value!r}")
        if self.num_single_blocks == 0:
            # After a last dual-stream block its text output would be unused, so its text MLP and
            # text output projection would never receive a gradient.
            raise ValueError(
                "num_single_blocks must be at least 1 (the last block must be single-stream); got 0"
            )
        if self.pooled_text_dim is not None:
            _positive("pooled_text_dim", self.pooled_text_dim)
        if self.dim % self.num_heads:
            raise ValueError(
                f"dim must be divisible by num_heads; got dim={self.dim}, num_heads={self.num_heads}"
            )
        if self.rope.head_dim != self.head_dim:
            raise ValueError(
                f"rope.axes_dims must sum to the head dim {self.head_dim}; got {self.rope.axes_dims}"
            )
        expected_patch = 3 if self.modality is Modality.VIDEO else 1
        if (
            not isinstance(self.patch_size, tuple)
            or len(self.patch_size) != expected_patch
            or any(isinstance(p, bool) or not isinstance(p, int) or p <= 0 for p in self.patch_size)
        ):
            raise ValueError(
                f"patch_size must be a tuple of {expected_patch} positive ints for {self.modality.value}; "
                f"got {self.patch_size!r}"
            )
        if not (isinstance(self.mlp_ratio, (int, float)) and self.mlp_ratio > 0):
            raise ValueError(f"mlp_ratio must be positive; got {self.mlp_ratio!r}")
        blocks = self.text_cross_attention_blocks
        if not isinstance(blocks, tuple) or any(
            isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.num_blocks for i in blocks
        ):
            raise ValueError(
                f"text_cross_attention_blocks must be a tuple of block indices in [0, {self.num_blocks}); "
                f"got {blocks!r}"
            )
        if len(set(blocks)) != len(blocks):
            raise ValueError(f"text_cross_attention_blocks has duplicates: {blocks!r}")
        k = self.frame_position_frequencies
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= 16:
            raise ValueError(f"frame_position_frequencies must be an int in [0, 16]; got {k!r}")
        if k and self.modality is not Modality.VIDEO:
            raise ValueError(
                f"frame_position_frequencies: only the video branch has frames; got audio with {k}"
            )
        k = self.time_phase_frequencies
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= 16:
            raise ValueError(f"time_phase_frequencies must be an int in [0, 16]; got {k!r}")
        if k and self.modality is not Modality.AUDIO:
            raise ValueError(
                f"time_phase_frequencies: only the audio branch sits between video latent frames; got "
                f"video with {k}"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def num_blocks(self) -> int:
        """M + N."""
        return self.num_dual_blocks + self.num_single_blocks

    @property
    def patch_features(self) -> int:
        """Output features per token: ``out_channels · prod(patch_size)``."""
        return self.out_channels * math.prod(self.patch_size)
