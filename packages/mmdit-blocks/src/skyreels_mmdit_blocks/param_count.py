"""Parameter counts of a configuration, built on the meta device (no memory, any size)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from skyreels_mmdit_blocks.branch import MMDiTBranch
from skyreels_mmdit_blocks.joint import JointAudioVideoTransformer
from skyreels_mmdit_blocks.joint_config import JointAudioVideoTransformerConfig

__all__ = ["BranchParameterCounts", "JointParameterCounts", "count_parameters", "parameter_counts"]


def count_parameters(module: nn.Module) -> int:
    """Number of scalars in ``module.parameters()`` (works on meta tensors)."""
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class BranchParameterCounts:
    """One branch, by part. ``text_cross_attention`` is included in the block counts too."""

    embeddings: int  # patch embedding + conditioning (timestep, pooled text, guidance)
    text_embedding: int  # token refiner or linear projection
    dual_blocks: int
    single_blocks: int
    text_cross_attention: int
    final_layer: int
    total: int

    @classmethod
    def of(cls, branch: MMDiTBranch) -> BranchParameterCounts:
        text_xattn = sum(
            count_parameters(b.text_cross_attention)
            for b in branch.blocks
            if b.text_cross_attention is not None
        )
        return cls(
            embeddings=count_parameters(branch.patch_embed) + count_parameters(branch.condition),
            text_embedding=count_parameters(branch.text_embed),
            dual_blocks=count_parameters(branch.dual_blocks),
            single_blocks=count_parameters(branch.single_blocks),
            text_cross_attention=text_xattn,
            final_layer=count_parameters(branch.final_layer),
            total=count_parameters(branch),
        )


@dataclass(frozen=True)
class JointParameterCounts:
    video: BranchParameterCounts
    audio: BranchParameterCounts
    exchanges: int  # all audio-video cross-attentions (eq. 5)
    total: int


def parameter_counts(config: JointAudioVideoTransformerConfig) -> JointParameterCounts:
    """Counts for a joint configuration, instantiated on the meta device."""
    with torch.device("meta"):
        model = JointAudioVideoTransformer(config)
    return JointParameterCounts(
        video=BranchParameterCounts.of(model.video),
        audio=BranchParameterCounts.of(model.audio),
        exchanges=count_parameters(model.exchanges),
        total=count_parameters(model),
    )
