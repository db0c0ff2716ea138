"""One MMDiT branch: embeddings, M dual-stream + N single-stream blocks, output head (paper 3.1).

The video branch numerically equals HunyuanVideo's transformer when configured like it (and loaded
with ``load_hunyuan_video_weights``); the audio branch is the same architecture over audio latents.

Data flow of ``forward`` (``embed`` -> ``run_block`` per block -> ``finish``; the joint transformer
calls the same three steps in lockstep for both branches):

1. patch-embed the latents; patch-embed the references and prepend them (eq. 8);
2. positions (video: references at negative t then the grid, eq. 9; audio: unit time steps) ->
   RoPE tables;
3. text tokens (refiner or linear), valid lengths from the mask, conditioning vector;
4. blocks; 5. drop the reference tokens by index, final layer, unpatchify.

Shape legend: B batch, R reference tokens, L latent tokens, Lt text tokens, D width, A position axes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from skyreels_attention import DenseMask, KeyPaddingMask
from skyreels_attention.finite_checks import check_finite
from skyreels_av_rope import RotaryEmbedding, in_context_video_positions, time_only_positions
from skyreels_mmdit_blocks.block_context import BlockContext, Rotary
from skyreels_mmdit_blocks.branch_config import MMDiTBranchConfig, Modality, TextEmbeddingKind
from skyreels_mmdit_blocks.condition_embed import ConditionEmbedding, check_batch_vector
from skyreels_mmdit_blocks.dual_stream import DualStreamBlock
from skyreels_mmdit_blocks.final_layer import FinalLayer
from skyreels_mmdit_blocks.frame_position import FramePositionEmbedding
from skyreels_mmdit_blocks.patch_embed import (
    AudioPatchEmbed,
    VideoGrid,
    VideoPatchEmbed,
    unpatchify_audio,
    unpatchify_video,
)
from skyreels_mmdit_blocks.single_stream import SingleStreamBlock
from skyreels_mmdit_blocks.text_mask import text_lengths_from_mask
from skyreels_mmdit_blocks.text_refiner import TextTokenRefiner
from skyreels_mmdit_blocks.time_phase import TimePhaseEmbedding

__all__ = ["BranchInputs", "MMDiTBranch"]


@dataclass(frozen=True)
class BranchInputs:
    """Everything ``embed`` prepared: the token streams, the shared block context, and how to undo it.

    latent: [B, R + L, D] references then latent tokens. text: [B, Lt, D].
    positions: [R + L, A] or [B, R + L, A], the positions the RoPE tables were built from.
    grid: post-patch video grid, or the audio token count L.
    """

    latent: torch.Tensor
    text: torch.Tensor
    context: BlockContext
    num_reference: int
    grid: VideoGrid | int
    positions: torch.Tensor


class MMDiTBranch(nn.Module):
    """Video or audio MMDiT branch: latents + text -> velocity on the same latent grid."""

    def __init__(self, config: MMDiTBranchConfig) -> None:
        super().__init__()
        if not isinstance(config, MMDiTBranchConfig):
            raise TypeError(f"config must be an MMDiTBranchConfig; got {type(config).__name__}")
        self.config = config
        c = config
        if c.modality is Modality.VIDEO:
            self.patch_embed: VideoPatchEmbed | AudioPatchEmbed = VideoPatchEmbed(
                in_channels=c.in_channels, dim=c.dim, patch_size=c.patch_size
            )
        else:
            self.patch_embed = AudioPatchEmbed(
                in_channels=c.in_channels, dim=c.dim, patch_size=c.patch_size[0]
            )
        self.condition = ConditionEmbedding(
            dim=c.dim, pooled_text_dim=c.pooled_text_dim, guidance=c.guidance_embedding
        )
        if c.text_embedding is TextEmbeddingKind.REFINER:
            self.text_embed: TextTokenRefiner | nn.Linear = TextTokenRefiner(
                text_dim=c.text_dim,
                dim=c.dim,
                num_heads=c.num_heads,
                num_blocks=c.num_refiner_blocks,
                mlp_ratio=c.mlp_ratio,
                attention=c.attention,
            )
        else:
            self.text_embed = nn.Linear(c.text_dim, c.dim)
        with_text_xattn = set(c.text_cross_attention_blocks)
        block_args = {
            "dim": c.dim,
            "num_heads": c.num_heads,
            "mlp_ratio": c.mlp_ratio,
            "attention": c.attention,
        }
        self.dual_blocks = nn.ModuleList(
            DualStreamBlock(text_cross_attention=i in with_text_xattn, **block_args)
            for i in range(c.num_dual_blocks)
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(text_cross_attention=c.num_dual_blocks + i in with_text_xattn, **block_args)
            for i in range(c.num_single_blocks)
        )
        self.final_layer = FinalLayer(dim=c.dim, out_features=c.patch_features)
        if c.frame_position_frequencies:
            frequencies = c.frame_position_frequencies
            self.frame_position = FramePositionEmbedding(dim=c.dim, num_frequencies=frequencies)
        if c.time_phase_frequencies:
            self.time_phase = TimePhaseEmbedding(dim=c.dim, num_frequencies=c.time_phase_frequencies)
        self.rope = RotaryEmbedding(c.rope)
        self.checkpointed_blocks: frozenset[int] = frozenset()

    @property
    def blocks(self) -> list[DualStreamBlock | SingleStreamBlock]:
        """All blocks in execution order: M dual-stream, then N single-stream."""
        return [*self.dual_blocks, *self.single_blocks]

    def set_activation_checkpointing(self, blocks: bool | Iterable[int]) -> None:
        """Recompute block activations in backward instead of storing them.

        ``blocks``: True = every block, False = none, or the indices (0 .. M+N-1) of the blocks to
        checkpoint (e.g. ``range(0, M + N, 2)`` for every other block).
        """
        if isinstance(blocks, bool):
            chosen = frozenset(range(self.config.num_blocks)) if blocks else frozenset()
        else:
            chosen = frozenset(blocks)
            bad = sorted(i for i in chosen if isinstance(i, bool) or not isinstance(i, int))
            bad += sorted(i for i in chosen if isinstance(i, int) and not 0 <= i < self.config.num_blocks)
            if bad:
                raise ValueError(
                    f"blocks must be True, False or indices in [0, {self.config.num_blocks}); got {bad}"
                )
        self.checkpointed_blocks = chosen

    # 1-3: inputs -> tokens and block context -------------------------------------------------
    def embed(
        self,
        latents: torch.Tensor,
        *,
        timestep: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        pooled_text: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
        reference_latents: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        latent_key_mask: torch.Tensor | None = None,
    ) -> BranchInputs:
        """Patch-embed, build positions, embed text and conditioning. Arguments as in ``forward``."""
        c = self.config
        name = f"{c.modality.value}_latents"
        if not isinstance(latents, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(latents).__name__}")
        # Finite inputs (issue 14): on CPU by default, switchable (skyreels_attention.finite_checks).
        for label, value in (
            (name, latents),
            ("timestep", timestep),
            ("text_tokens", text_tokens),
            ("pooled_text", pooled_text),
            ("guidance", guidance),
            ("reference_latents", reference_latents),
            ("positions", positions),
        ):
            check_finite(value, f"{c.modality.value} branch: {label}")
        tokens, grid = self.patch_embed(latents, name=name)
        if c.frame_position_frequencies:  # where each token sits in its frame (beyond the paper)
            tokens = tokens + self.frame_position(grid)
        batch = latents.shape[0]
        check_batch_vector(timestep, batch, "timestep")

        reference_tokens, reference_grid = None, None
        if reference_latents is not None:
            if reference_latents.shape[0] != batch:
                raise ValueError(
                    f"reference_latents must have batch {batch} like {name}; got {reference_latents.shape[0]}"
                )
            reference_tokens, reference_grid = self.patch_embed(reference_latents, name="reference_latents")
            if c.frame_position_frequencies:
                reference_tokens = reference_tokens + self.frame_position(reference_grid)
            tokens = torch.cat([reference_tokens, tokens], dim=1)
        num_reference = 0 if reference_tokens is None else reference_tokens.shape[1]

        if positions is None:
            positions = self.default_positions(grid, reference_grid, device=latents.device)
        elif (
            not isinstance(positions, torch.Tensor)
            or positions.ndim not in (2, 3)
            or (
                positions.shape[-2] != tokens.shape[1]
                or (positions.ndim == 3 and positions.shape[0] != batch)
            )
        ):
            got = tuple(positions.shape) if isinstance(positions, torch.Tensor) else type(positions).__name__
            raise ValueError(
                f"positions must be [{tokens.shape[1]}, {c.rope.num_axes}] or [{batch}, {tokens.shape[1]}, "
                f"{c.rope.num_axes}] (references then latent tokens); got {got}"
            )
        rotary = Rotary(*self.rope(positions))
        if c.time_phase_frequencies:  # where each audio token sits between latent frames (beyond the paper)
            tokens = tokens + self.time_phase(positions[..., 0])

        if (
            not isinstance(text_tokens, torch.Tensor)
            or text_tokens.ndim != 3
            or (text_tokens.shape[0] != batch or text_tokens.shape[2] != c.text_dim)
        ):
            got = (
                tuple(text_tokens.shape)
                if isinstance(text_tokens, torch.Tensor)
                else type(text_tokens).__name__
            )
            raise ValueError(f"text_tokens must be [{batch}, Lt, {c.text_dim}]; got {got}")
        lengths = None
        if text_mask is not None:
            lengths = text_lengths_from_mask(text_mask, batch=batch, text_len=text_tokens.shape[1])
        if isinstance(self.text_embed, TextTokenRefiner):
            text = self.text_embed(text_tokens, timestep, lengths)
        else:
            text = self.text_embed(text_tokens)

        conditioning = self.condition(timestep, pooled_text=pooled_text, guidance=guidance)
        context = BlockContext(
            conditioning=conditioning,
            rotary=rotary,
            joint_mask=self._joint_mask(latent_key_mask, lengths, batch, tokens.shape[1], text.shape[1]),
            text_context=text,
            text_mask=None if lengths is None else KeyPaddingMask(valid_lengths=lengths),
        )
        return BranchInputs(tokens, text, context, num_reference, grid, positions)

    @staticmethod
    def _joint_mask(
        latent_key_mask: torch.Tensor | None,
        text_lengths: torch.Tensor | None,
        batch: int,
        num_latent: int,
        num_text: int,
    ) -> KeyPaddingMask | DenseMask | None:
        """Keys of the joint sequence [latent; text] (eq. 3) that may be attended.

        Text padding alone is a key-padding mask (exactly HunyuanVideo's); masked latent keys (e.g.
        reference tokens made only of padding) need a dense [B, 1, 1, L + Lt] key mask.
        """
        if latent_key_mask is None:
            return None if text_lengths is None else KeyPaddingMask(valid_lengths=text_lengths + num_latent)
        if (
            not isinstance(latent_key_mask, torch.Tensor)
            or latent_key_mask.dtype != torch.bool
            or latent_key_mask.shape != (batch, num_latent)
        ):
            got = (
                f"{latent_key_mask.dtype} {tuple(latent_key_mask.shape)}"
                if isinstance(latent_key_mask, torch.Tensor)
                else type(latent_key_mask).__name__
            )
            raise ValueError(f"latent_key_mask must be a bool tensor [{batch}, {num_latent}]; got {got}")
        text_keys = torch.ones(batch, num_text, dtype=torch.bool, device=latent_key_mask.device)
        if text_lengths is not None:
            text_keys = torch.arange(num_text, device=latent_key_mask.device)[None, :] < text_lengths[:, None]
        return DenseMask(torch.cat([latent_key_mask, text_keys], dim=1)[:, None, None, :])

    def default_positions(
        self,
        grid: VideoGrid | int,
        reference_grid: VideoGrid | int | None,
        *,
        device: torch.device,
    ) -> torch.Tensor:
        """[R + L, A]: video -> references at t = -T_ref..-1 then the grid (eq. 9, HunyuanVideo grid);
        audio -> time ``-R..-1`` then ``0..L-1`` in column 0 (unit steps; the joint transformer rescales).
        """
        if self.config.modality is Modality.VIDEO:
            references = [] if reference_grid is None else [tuple(reference_grid)]
            return in_context_video_positions(references, tuple(grid), device=device)
        num_reference = 0 if reference_grid is None else int(reference_grid)
        times = torch.arange(-num_reference, int(grid), dtype=torch.float32, device=device)
        return time_only_positions(times[:, None], self.config.rope.num_axes)

    # 4: blocks ------------------------------------------------------------------------------
    def run_block(
        self, index: int, latent: torch.Tensor, text: torch.Tensor, context: BlockContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Block ``index`` (0 .. M+N-1), checkpointed when activation checkpointing is on."""
        block = self.blocks[index]
        if index in self.checkpointed_blocks and torch.is_grad_enabled():
            return checkpoint(block, latent, text, context, use_reentrant=False)
        return block(latent, text, context)

    # 5: tokens -> velocity ------------------------------------------------------------------
    def finish(self, latent: torch.Tensor, inputs: BranchInputs) -> torch.Tensor:
        """Drop the reference tokens, apply the final layer and unpatchify to the input latent grid."""
        features = self.final_layer(latent[:, inputs.num_reference :], inputs.context.conditioning)
        if self.config.modality is Modality.VIDEO:
            return unpatchify_video(features, inputs.grid, self.config.patch_size)
        return unpatchify_audio(features, self.config.patch_size[0])

    def finish_references(self, latent: torch.Tensor, inputs: BranchInputs) -> torch.Tensor:
        """The final layer on the reference tokens only: ``[B, R, C·p]`` features in patch order (for
        reference tokens that are denoised, e.g. the joint high-resolution keyframes of paper 4.5; the
        caller knows their grid and unpatchifies them)."""
        return self.final_layer(latent[:, : inputs.num_reference], inputs.context.conditioning)

    def forward(
        self,
        latents: torch.Tensor,
        *,
        timestep: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        pooled_text: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
        reference_latents: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        latent_key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the flow-matching velocity ``ε - x0`` for the latents.

        Args:
            latents: video ``[B, C_in, T, H, W]`` or audio ``[B, C_in, La]``.
            timestep: ``[B]`` flow-matching timestep ``1000·σ``.
            text_tokens: ``[B, Lt, text_dim]`` text-encoder states (right-padded).
            text_mask: ``[B, Lt]``, 1 = real token, 0 = padding; None = no padding.
            pooled_text: ``[B, pooled_text_dim]``, required iff the config has a pooled-text width.
            guidance: ``[B]`` distilled-guidance scale (×1000 as HunyuanVideo feeds it), required iff
                ``guidance_embedding``.
            reference_latents: in-context references prepended to the tokens (eq. 8), same channels
                as ``latents``: video ``[B, C_in, T_ref, H_ref, W_ref]``, audio ``[B, C_in, La_ref]``.
            positions: override of the RoPE positions ``[R + L, A]`` or ``[B, R + L, A]``.
            latent_key_mask: bool ``[B, R + L]``; False = never attended as a key (e.g. reference
                tokens made only of padding). None = every latent token is a key.

        Returns:
            ``[B, out_channels, T, H, W]`` or ``[B, out_channels, La]``; references are not returned.
        """
        inputs = self.embed(
            latents,
            timestep=timestep,
            text_tokens=text_tokens,
            text_mask=text_mask,
            pooled_text=pooled_text,
            guidance=guidance,
            reference_latents=reference_latents,
            positions=positions,
            latent_key_mask=latent_key_mask,
        )
        latent, text = inputs.latent, inputs.text
        for index in range(self.config.num_blocks):
            latent, text = self.run_block(index, latent, text, inputs.context)
        return self.finish(latent, inputs)
