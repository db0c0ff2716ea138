"""The super-resolution + frame-interpolation refiner: a video MMDiT branch with VSA self-attention.

Paper section 4.5: initialised from the pretrained video model, it reads the noisy high-res latents
concatenated along channels with the base model's outputs (``refiner_condition.py``) and predicts
the flow-matching velocity on the high-res grid. Every block's joint self-attention runs VSA over
the grid tokens (text and reference tokens stay dense).

``refiner_from_base`` copies a base branch: every weight as it is, the patch embedding widened by the
``C`` new ``U`` channels with zero weights, and zero VSA gates; so at sparsity 0 the refiner equals
the base branch (on the base's channels) until training moves the new weights.

Shape legend: B batch, C latent channels, T/H/W high-res latent grid, Lt text tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from skyreels_mmdit_blocks import (
    MMDiTBranch,
    MMDiTBranchConfig,
    Modality,
    VideoPatchEmbed,
    widen_patch_embed,
)
from skyreels_refiner_vsa.refiner_blocks import GridLayout, GridLayoutSlot, install_vsa_attention_stages
from skyreels_refiner_vsa.vsa_module import VideoSparseAttention, VSAConfig

__all__ = ["VideoRefiner", "VideoRefinerConfig", "refiner_config_from_base", "refiner_from_base"]


@dataclass(frozen=True, kw_only=True)
class VideoRefinerConfig:
    """A video branch reading ``Concat(V, I, M, U)`` = ``3C + 1`` channels, and its VSA settings.

    Attributes:
        branch: the video branch; ``in_channels`` must be ``3 · out_channels + 1``.
        vsa: block selection and backends of every block's self-attention.
    """

    branch: MMDiTBranchConfig
    vsa: VSAConfig

    def __post_init__(self) -> None:
        if not isinstance(self.branch, MMDiTBranchConfig) or self.branch.modality is not Modality.VIDEO:
            raise TypeError(f"branch must be a video MMDiTBranchConfig, got {self.branch!r}")
        if not isinstance(self.vsa, VSAConfig):
            raise TypeError(f"vsa must be a VSAConfig, got {type(self.vsa).__name__}")
        c = self.branch.out_channels
        if self.branch.in_channels != 3 * c + 1:
            raise ValueError(
                f"branch.in_channels must be 3·C + 1 = {3 * c + 1} for Concat(V, I, M, U) with "
                f"C = out_channels "
                f"= {c}, got {self.branch.in_channels}"
            )

    @property
    def latent_channels(self) -> int:
        return self.branch.out_channels


def refiner_config_from_base(base: MMDiTBranchConfig, *, vsa: VSAConfig) -> VideoRefinerConfig:
    """The refiner config of a base video branch reading eq. 7's ``Concat(V, I, M)`` (``2C + 1`` channels)."""
    if not isinstance(base, MMDiTBranchConfig) or base.modality is not Modality.VIDEO:
        raise TypeError(f"base must be a video MMDiTBranchConfig, got {base!r}")
    c = base.out_channels
    if base.in_channels != 2 * c + 1:
        raise ValueError(
            f"base.in_channels must be 2·C + 1 = {2 * c + 1} (eq. 7's Concat(V, I, M)), "
            f"got {base.in_channels}"
        )
    return VideoRefinerConfig(branch=replace(base, in_channels=3 * c + 1), vsa=vsa)


class VideoRefiner(nn.Module):
    """Velocity of the high-res latents given ``Concat(V, I, M, U)``, with VSA in every block."""

    def __init__(self, config: VideoRefinerConfig) -> None:
        super().__init__()
        if not isinstance(config, VideoRefinerConfig):
            raise TypeError(f"config must be a VideoRefinerConfig, got {type(config).__name__}")
        self.config = config
        self.branch = MMDiTBranch(config.branch)
        b = config.branch
        self.vsa = nn.ModuleList(
            VideoSparseAttention(dim=b.dim, num_heads=b.num_heads, config=config.vsa)
            for _ in range(b.num_blocks)
        )
        # Each block's attention stage *is* its VSA stage (the block's own method, so that FSDP2 and
        # sequence parallelism wrap it); the grid layout of the running forward sits in a slot.
        self._layout = GridLayoutSlot()
        install_vsa_attention_stages(self.branch.blocks, self.vsa, self._layout)

    def set_sparsity(self, sparsity: float) -> None:
        """Every block's VSA sparsity (the training ramp calls this each step)."""
        for vsa in self.vsa:
            vsa.set_sparsity(sparsity)

    def set_activation_checkpointing(self, blocks: bool | Iterable[int]) -> None:
        """Recompute block activations in backward: True = every block, or the block indices."""
        self.branch.set_activation_checkpointing(blocks)

    def _run_block(self, index: int, latent: Tensor, text: Tensor, context) -> tuple[Tensor, Tensor]:
        block = self.branch.blocks[index]
        return block.feed_forward_stage(block.attention_stage(latent, text, context))

    @property
    def grid_layout(self) -> GridLayout:
        """Where the current forward's grid tokens sit (set by ``run_blocks`` before the blocks run)."""
        return self._layout.get()

    def run_blocks(self, latent: Tensor, text: Tensor, context, layout: GridLayout) -> tuple[Tensor, Tensor]:
        """Every block in order on the embedded tokens (with activation checkpointing where it is on);
        ``layout`` is where their grid tokens sit. The single-device and the sequence-parallel forward
        share it (their blocks' attention stages differ)."""
        self._layout.layout = layout
        for index in range(len(self.vsa)):
            if index in self.branch.checkpointed_blocks and torch.is_grad_enabled():
                latent, text = checkpoint(self._run_block, index, latent, text, context, use_reentrant=False)
            else:
                latent, text = self._run_block(index, latent, text, context)
        return latent, text

    def forward(
        self,
        refiner_input: Tensor,
        *,
        timestep: Tensor,
        text_tokens: Tensor,
        text_mask: Tensor | None = None,
        pooled_text: Tensor | None = None,
        guidance: Tensor | None = None,
        reference_latents: Tensor | None = None,
        positions: Tensor | None = None,
        latent_key_mask: Tensor | None = None,
    ) -> Tensor:
        """Predict ``ε - x0`` on the high-res grid.

        Args:
            refiner_input: ``[B, 3C + 1, T, H, W]`` = ``RefinerCondition.concat(noisy_latents)``.
            timestep: ``[B]`` flow-matching timestep ``1000·σ``.
            text_tokens, text_mask, pooled_text, guidance, reference_latents, positions,
                latent_key_mask: as ``MMDiTBranch.forward`` (reference latents have the refiner
                input's channels; their tokens attend densely; only reference keys may be masked).

        Returns:
            ``[B, C, T, H, W]``.
        """
        inputs = self.branch.embed(
            refiner_input,
            timestep=timestep,
            text_tokens=text_tokens,
            text_mask=text_mask,
            pooled_text=pooled_text,
            guidance=guidance,
            reference_latents=reference_latents,
            positions=positions,
            latent_key_mask=latent_key_mask,
        )
        layout = GridLayout(inputs.num_reference, tuple(inputs.grid))
        latent, _ = self.run_blocks(inputs.latent, inputs.text, inputs.context, layout)
        return self.branch.finish(latent, inputs)


def refiner_from_base(base: MMDiTBranch, *, vsa: VSAConfig) -> VideoRefiner:
    """A refiner initialised from a pretrained base video branch (paper 4.5: "initialize ... from the base").

    Copies every base weight, widens the patch embedding from ``2C + 1`` to ``3C + 1`` channels with
    zero weights on the new ``U`` channels, and keeps the VSA gates at zero. The refiner is built on
    the base's device and dtype.
    """
    if not isinstance(base, MMDiTBranch):
        raise TypeError(f"base must be an MMDiTBranch, got {type(base).__name__}")
    config = refiner_config_from_base(base.config, vsa=vsa)
    parameter = next(base.parameters())
    with torch.device(parameter.device):
        refiner = VideoRefiner(config).to(parameter.dtype)
    state = dict(base.state_dict())
    if not isinstance(base.patch_embed, VideoPatchEmbed):
        raise TypeError(f"base.patch_embed must be a VideoPatchEmbed, got {type(base.patch_embed).__name__}")
    wide = widen_patch_embed(base.patch_embed, config.branch.in_channels)
    state.update({f"patch_embed.{name}": value for name, value in wide.state_dict().items()})
    refiner.branch.load_state_dict(state, strict=True)
    return refiner
