"""The attention stage of the MMDiT blocks with VSA in self-attention (the refiner, paper section 4.5).

A refiner block *is* a pretrained ``DualStreamBlock`` / ``SingleStreamBlock`` (same parameters, same
names) plus a ``VideoSparseAttention`` holding its gate. Only the joint self-attention changes:

    [Q_x; Q_t] attention (eq. 3)  ->  grid tokens: VSA over the grid, plus every other key densely;
                                      reference and text tokens: dense attention over every key

so each function below mirrors the block's own ``attention_stage`` step for step and swaps that one
call. The feed-forward stage is the block's own. With sparsity 0 and zero gates the result equals
the block's (tested).

Token layout of a branch: ``latent = [references (R); grid (N)]`` then ``text (Lt)``. The joint key
mask may mask text keys (padding) and reference keys; grid keys are always attended.

Shape legend: B batch, R reference tokens, N grid tokens, Lt text tokens, D width, H heads, Dh head dim.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor, nn

from skyreels_attention import DenseMask, KeyPaddingMask
from skyreels_mmdit_blocks import BlockContext, BlockState, DualStreamBlock, SingleStreamBlock, modulate
from skyreels_mmdit_blocks.rotary import rotate_prefix
from skyreels_refiner_vsa.vsa_module import VideoSparseAttention

__all__ = [
    "GridLayout",
    "GridLayoutSlot",
    "JointAttend",
    "attention_stage_with",
    "install_vsa_attention_stages",
    "vsa_attention_stage",
    "vsa_joint_attention",
]

#: ``attend(q, k, v, normed_latent) -> out``: the joint self-attention of a block's attention stage.
#: q, k, v are ``[B, L + Lt, H, Dh]`` (RoPE applied), ``normed_latent`` is ``[B, L, D]``, the normed
#: hidden states of the latent tokens (the input of their q/k/v projection), and the result is
#: ``[B, L + Lt, H, Dh]``.
JointAttend = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


class GridLayout(NamedTuple):
    """Where the grid tokens sit in a branch's latent stream: after ``num_reference`` tokens."""

    num_reference: int
    grid: tuple[int, int, int]


def _dense_keys(
    ctx: BlockContext, dense_k: Tensor, dense_v: Tensor, num_reference: int, num_grid: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Dense keys/values ``[B, R + Lt, H, Dh]`` with their valid keys first, and the valid counts ``[B]``.

    The joint mask covers ``[references; grid; text]``; grid keys must all be valid (the
    block-sparse fine stage masks keys only past a valid length).
    """
    mask, r, n = ctx.joint_mask, num_reference, num_grid
    if mask is None:
        return dense_k, dense_v, None
    if isinstance(mask, KeyPaddingMask):
        # Valid keys are a prefix of the joint sequence; past the grid it continues over the text.
        lengths = mask.valid_lengths.to(dense_k.device)
        if not bool((lengths >= r + n).all()):
            raise ValueError("the joint mask masks grid keys; VSA can mask only reference and text keys")
        return dense_k, dense_v, lengths - n
    if isinstance(mask, DenseMask) and mask.mask.dtype == torch.bool:
        full = mask.mask_4d.to(dense_k.device)
        batch, num_keys = dense_k.shape[0], dense_k.shape[1] + n
        if full.shape[1] == 1 and full.shape[2] == 1 and full.shape[3] == num_keys:
            valid = full[:, 0, 0].expand(batch, num_keys)
            if not bool(valid[:, r : r + n].all()):
                raise ValueError("the joint mask masks grid keys; VSA can mask only reference and text keys")
            keep = torch.cat([valid[:, :r], valid[:, r + n :]], dim=1)  # [B, R + Lt]
            # Attention ignores key order: move the valid dense keys first so a length masks the rest.
            order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :, None, None]
            dense_k = dense_k.gather(1, order.expand_as(dense_k))
            dense_v = dense_v.gather(1, order.expand_as(dense_v))
            return dense_k, dense_v, keep.sum(dim=1)
    raise TypeError(
        "VSA needs the joint mask to be a key mask (KeyPaddingMask or a bool DenseMask [B, 1, 1, L + Lt]), "
        f"got {mask!r}"
    )


def vsa_joint_attention(
    vsa: VideoSparseAttention,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    layout: GridLayout,
    gate_input: Tensor,
    ctx: BlockContext,
) -> Tensor:
    """Joint self-attention over ``[references; grid; text]`` with VSA on the grid queries.

    Args:
        q, k, v: ``[B, R + N + Lt, H, Dh]`` in the block's token order (RoPE applied).
        layout: R and the grid.
        gate_input: ``[B, N, D]`` the normed hidden states of the grid tokens.
        ctx: the block context; its ``joint_mask`` may mask reference and text keys (grid keys
            must all be valid: the block-sparse fine stage masks keys only past a valid length).

    Returns:
        ``[B, R + N + Lt, H, Dh]`` in the same order.
    """
    r = layout.num_reference
    n = layout.grid[0] * layout.grid[1] * layout.grid[2]
    # Everything that is not a grid token stays dense: references and text, in that order.
    dense_q, dense_k, dense_v = (torch.cat([x[:, :r], x[:, r + n :]], dim=1) for x in (q, k, v))
    dense_k, dense_v, dense_valid = _dense_keys(ctx, dense_k, dense_v, r, n)
    has_dense = dense_q.shape[1] > 0
    out = vsa(
        q[:, r : r + n],
        k[:, r : r + n],
        v[:, r : r + n],
        grid=layout.grid,
        gate_input=gate_input,
        text_q=dense_q if has_dense else None,
        text_k=dense_k if has_dense else None,
        text_v=dense_v if has_dense else None,
        text_valid_lengths=dense_valid if has_dense else None,
    )
    if out.text is None:
        return out.video
    return torch.cat([out.text[:, :r], out.video, out.text[:, r:]], dim=1)


def _dual_attention_stage(
    block: DualStreamBlock, attend: JointAttend, latent_BLD: Tensor, text_BTD: Tensor, ctx: BlockContext
) -> BlockState:
    # Mirrors DualStreamBlock.attention_stage; only the attention call differs.
    num_latent = latent_BLD.shape[1]
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = block.latent_modulation(ctx.conditioning)
    t_shift_a, t_scale_a, t_gate_a, t_shift_m, t_scale_m, t_gate_m = block.text_modulation(ctx.conditioning)

    normed = modulate(nn.functional.layer_norm(latent_BLD, latent_BLD.shape[-1:], eps=1e-6), shift_a, scale_a)
    text_normed = modulate(
        nn.functional.layer_norm(text_BTD, text_BTD.shape[-1:], eps=1e-6), t_shift_a, t_scale_a
    )
    q_x, k_x, v_x = block.latent_attn(normed)
    q_t, k_t, v_t = block.text_attn(text_normed)
    q_x, k_x = _rotate(q_x, ctx, num_latent), _rotate(k_x, ctx, num_latent)

    out = attend(
        torch.cat([q_x, q_t], dim=1), torch.cat([k_x, k_t], dim=1), torch.cat([v_x, v_t], dim=1), normed
    ).flatten(2)
    latent_BLD = latent_BLD + gate_a * block.latent_out(out[:, :num_latent])
    text_BTD = text_BTD + t_gate_a * block.text_out(out[:, num_latent:])
    if block.text_cross_attention is not None:
        latent_BLD = block.text_cross_attention(latent_BLD, ctx.text_context, text_mask=ctx.text_mask)
    return BlockState(latent_BLD, text_BTD, (shift_m, scale_m, gate_m, t_shift_m, t_scale_m, t_gate_m))


def _single_attention_stage(
    block: SingleStreamBlock, attend: JointAttend, latent_BLD: Tensor, text_BTD: Tensor, ctx: BlockContext
) -> BlockState:
    # Mirrors SingleStreamBlock.attention_stage; only the attention call differs.
    num_latent = latent_BLD.shape[1]
    shift, scale, gate = block.modulation(ctx.conditioning)
    tokens = torch.cat([latent_BLD, text_BTD], dim=1)
    hidden = modulate(nn.functional.layer_norm(tokens, (block.dim,), eps=1e-6), shift, scale)

    qkv, mlp = block.qkv_mlp_in(hidden).split([3 * block.dim, block.mlp_dim], dim=-1)
    q, k, v = (x.unflatten(-1, (block.num_heads, -1)) for x in qkv.chunk(3, dim=-1))
    q = _rotate(block.q_norm(q), ctx, num_latent)
    k = _rotate(block.k_norm(k), ctx, num_latent)
    out = attend(q, k, v, hidden[:, :num_latent])

    update = block.attn_mlp_out(
        torch.cat([out.flatten(2), nn.functional.gelu(mlp, approximate="tanh")], dim=-1)
    )
    tokens = tokens + gate * update
    latent_BLD, text_BTD = tokens[:, :num_latent], tokens[:, num_latent:]
    if block.text_cross_attention is not None:
        latent_BLD = block.text_cross_attention(latent_BLD, ctx.text_context, text_mask=ctx.text_mask)
    return BlockState(latent_BLD, text_BTD)


def _rotate(x_BLHK: Tensor, ctx: BlockContext, num_latent: int) -> Tensor:
    """RoPE on the latent prefix (references and grid), as the blocks do; the table must have one
    row per latent token."""
    return rotate_prefix(x_BLHK, ctx.rotary, num_latent=num_latent, name="ctx.rotary")


def vsa_attention_stage(
    block: DualStreamBlock | SingleStreamBlock,
    vsa: VideoSparseAttention,
    latent_BLD: Tensor,
    text_BTD: Tensor,
    ctx: BlockContext,
    layout: GridLayout,
) -> BlockState:
    """``block.attention_stage`` with VSA in the joint self-attention; then call ``block.feed_forward_stage``.

    Args:
        block: a pretrained dual- or single-stream block (its parameters are used as they are).
        vsa: this block's VSA (gate and sparsity).
        latent_BLD: ``[B, R + N, D]`` references then grid tokens. text_BTD: ``[B, Lt, D]``.
        ctx: the branch's block context. layout: R and the grid.
    """
    if latent_BLD.shape[1] != layout.num_reference + layout.grid[0] * layout.grid[1] * layout.grid[2]:
        raise ValueError(
            f"latent_BLD must hold R + t·h·w = {layout.num_reference} + {layout.grid} tokens, "
            f"got {latent_BLD.shape[1]}"
        )
    r, n = layout.num_reference, latent_BLD.shape[1] - layout.num_reference

    def attend(q: Tensor, k: Tensor, v: Tensor, normed: Tensor) -> Tensor:
        return vsa_joint_attention(vsa, q, k, v, layout=layout, gate_input=normed[:, r : r + n], ctx=ctx)

    return attention_stage_with(block, attend, latent_BLD, text_BTD, ctx)


def attention_stage_with(
    block: DualStreamBlock | SingleStreamBlock,
    attend: JointAttend,
    latent_BLD: Tensor,
    text_BTD: Tensor,
    ctx: BlockContext,
) -> BlockState:
    """``block.attention_stage`` with its joint self-attention replaced by ``attend`` (``JointAttend``);
    everything else (modulation, projections, RoPE, output gates, text cross-attention) is the block's
    own. ``vsa_attention_stage`` is this with VSA; sequence parallelism passes an ``attend`` that moves
    the tokens between ranks around VSA."""
    if isinstance(block, DualStreamBlock):
        return _dual_attention_stage(block, attend, latent_BLD, text_BTD, ctx)
    if isinstance(block, SingleStreamBlock):
        return _single_attention_stage(block, attend, latent_BLD, text_BTD, ctx)
    raise TypeError(f"block must be a DualStreamBlock or SingleStreamBlock, got {type(block).__name__}")


@dataclass
class GridLayoutSlot:
    """The grid layout of the forward that is running, written by the model before its blocks run
    and read by the VSA stages that ``install_vsa_attention_stages`` installs."""

    layout: GridLayout | None = None

    def get(self) -> GridLayout:
        if self.layout is None:
            raise RuntimeError("VSA blocks ran outside their model's forward (no grid layout recorded)")
        return self.layout


def _slot_vsa_stage(
    block: nn.Module, vsa: VideoSparseAttention, slot: GridLayoutSlot, latent: Tensor, text: Tensor, ctx
) -> BlockState:
    return vsa_attention_stage(block, vsa, latent, text, ctx, slot.get())


def install_vsa_attention_stages(
    blocks: Iterable[nn.Module], vsas: Iterable[VideoSparseAttention], slot: GridLayoutSlot
) -> None:
    """Make each block's ``attention_stage`` its VSA stage (``vsa_attention_stage`` on ``slot``'s
    layout), as the block's own method: code that wraps a block's stages (FSDP2's registered forward
    methods, sequence parallelism) then sees the whole block. A deep copy of the model keeps each
    copied block bound to its copied VSA and slot. The state dict is unchanged."""
    for block, vsa in zip(blocks, vsas, strict=True):
        block.attention_stage = partial(_slot_vsa_stage, block, vsa, slot)
