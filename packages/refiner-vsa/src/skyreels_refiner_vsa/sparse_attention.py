"""`video_sparse_attention`: the VSA computation as one function (paper section 4.5; VSA, arXiv 2505.13389).

    out_video = gate ⊙ coarse(q, k, v) + fine(q, [k; k_text], [v; v_text] | top-K blocks + text)
    out_text  = dense attention of the text queries over [video; text] keys

1. tile the video q, k, v into blocks (``tiling.py``);
2. coarse stage over mean-pooled blocks (``coarse.py``); its logits rank the key blocks;
3. top-K video key blocks per (head, query block), plus every text key block (``selection.py``);
4. fine stage: exact attention restricted to those 64x64 tiles through skyreels-attention's
   ``block_sparse_attention`` (torch / flex / triton), softmax renormalised over the selection;
5. ``gate ⊙ coarse + fine``, back to grid order. Text queries attend densely to every key.

With every video block kept and a zero gate, ``out_video`` is exactly dense joint attention.

Shape legend: B batch, N = t·h·w video tokens (grid order), Lt text tokens, H heads, D head dim.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from skyreels_attention import KeyPaddingMask, attention, autocast_off, value_checks_enabled
from skyreels_attention.block_sparse import BlockSparseBackendName, block_sparse_attention
from skyreels_refiner_vsa.coarse import coarse_attention
from skyreels_refiner_vsa.selection import select_key_blocks
from skyreels_refiner_vsa.tiling import CubeTiling

__all__ = ["VSAOutput", "check_vsa_inputs", "video_sparse_attention"]


class VSAOutput(NamedTuple):
    """video: ``[B, N, H, D]`` in grid order; text: ``[B, Lt, H, D]`` or None without text."""

    video: Tensor
    text: Tensor | None


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def _check_text_valid_lengths(lengths: object, batch: int, num_text: int) -> None:
    """An integer (not bool) tensor ``[B]`` with values in ``[0, Lt]``.

    Out-of-range values do not fail downstream in a useful way: a negative one would mask the last
    grid keys (the keys are ``[video; text]`` and valid lengths count from the video's start), one
    above ``Lt`` fails deep inside the block-sparse op. Reading the values is a host sync, so that
    check follows ``skyreels_attention.value_checks_enabled()`` (off while torch.compile traces).
    """
    if not isinstance(lengths, Tensor):
        raise TypeError(
            f"text_valid_lengths must be an integer tensor [B={batch}], got {type(lengths).__name__}"
        )
    dtype = lengths.dtype
    if dtype == torch.bool or dtype.is_floating_point or dtype.is_complex:
        raise TypeError(f"text_valid_lengths must have an integer (not bool) dtype, got {dtype}")
    if tuple(lengths.shape) != (batch,):
        raise ValueError(f"text_valid_lengths must be [B={batch}], got {tuple(lengths.shape)}")
    if value_checks_enabled() and bool(((lengths < 0) | (lengths > num_text)).any()):
        raise ValueError(
            f"text_valid_lengths must lie in [0, Lt={num_text}] (text_q's length), got {lengths.tolist()}"
        )


def check_vsa_inputs(
    video_q: Tensor,
    video_k: Tensor,
    video_v: Tensor,
    tiling: CubeTiling,
    text: tuple[Tensor, Tensor, Tensor] | None,
    text_valid_lengths: Tensor | None,
    gate: Tensor | None,
) -> None:
    """Raise TypeError/ValueError naming the argument when shapes or dtypes disagree."""
    for name, x in (("video_q", video_q), ("video_k", video_k), ("video_v", video_v)):
        if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise TypeError(f"{name} must be a float tensor [B, N, H, D], got {_shape(x)}")
    expected = tuple(video_q.shape)
    if expected[1] != tiling.num_tokens:
        raise ValueError(
            f"video_q must have N = t·h·w = {tiling.num_tokens} tokens for grid {tiling.grid}, got {expected}"
        )
    for name, x in (("video_k", video_k), ("video_v", video_v)):
        if tuple(x.shape) != expected or x.dtype != video_q.dtype:
            raise ValueError(
                f"{name} must match video_q {expected} {video_q.dtype}, got {_shape(x)} {x.dtype}"
            )
    batch, _, heads, head_dim = expected
    if text is not None:
        lt = text[0].shape[1] if isinstance(text[0], Tensor) and text[0].dim() == 4 else -1
        for name, x in zip(("text_q", "text_k", "text_v"), text):
            if (
                not isinstance(x, Tensor)
                or x.dim() != 4
                or (x.shape[0], x.shape[2], x.shape[3]) != (batch, heads, head_dim)
                or x.shape[1] != lt
                or lt < 1
            ):
                raise ValueError(
                    f"{name} must be [B={batch}, Lt>=1, H={heads}, D={head_dim}] like text_q, got {_shape(x)}"
                )
            if x.dtype != video_q.dtype:
                raise TypeError(f"{name} must have video_q's dtype {video_q.dtype}, got {x.dtype}")
    if text_valid_lengths is not None:
        if text is None:
            raise ValueError("text_valid_lengths was given without text_q/text_k/text_v")
        _check_text_valid_lengths(text_valid_lengths, batch, text[0].shape[1])
    if gate is not None and (not isinstance(gate, Tensor) or tuple(gate.shape) != expected):
        raise ValueError(f"gate must be [B, N, H, D] = {expected} like video_q, got {_shape(gate)}")


def video_sparse_attention(
    video_q: Tensor,
    video_k: Tensor,
    video_v: Tensor,
    *,
    tiling: CubeTiling,
    keep: int,
    gate: Tensor | None = None,
    text_q: Tensor | None = None,
    text_k: Tensor | None = None,
    text_v: Tensor | None = None,
    text_valid_lengths: Tensor | None = None,
    scale: float | None = None,
    backend: BlockSparseBackendName | None = None,
    dense_backend: str | None = None,
) -> VSAOutput:
    """Video Sparse Attention of video tokens on a grid, jointly with optional (dense) text tokens.

    Args:
        video_q, video_k, video_v: ``[B, N, H, D]``, grid (t-major) order, RoPE already applied.
        tiling: ``cube_tiling(grid)``; its device must be the inputs' device.
        keep: ``K`` video key blocks per query block (``keep_block_count``); ``nB`` = dense.
        gate: ``[B, N, H, D]`` weights of the coarse output (the gate projection's output), or None
            for no coarse term.
        text_q, text_k, text_v: ``[B, Lt, H, D]`` text tokens of the joint attention, or all None.
        text_valid_lengths: ``[B]`` integer tensor in ``[0, Lt]``, text keys at or past it are
            padding; None = all real. The range check reads the values (a host sync); it follows
            ``skyreels_attention.value_checks_enabled()``.
        scale: softmax scale, default ``1/sqrt(D)`` (coarse and fine alike).
        backend: block-sparse backend of the fine stage ("cpp", "gather", "torch", "flex",
            "triton"; None: automatic per device).
        dense_backend: skyreels-attention backend for the text queries (None = automatic).

    Returns:
        ``VSAOutput(video [B, N, H, D], text [B, Lt, H, D] | None)`` in ``video_q``'s dtype.
    """
    text = None if text_q is None and text_k is None and text_v is None else (text_q, text_k, text_v)
    check_vsa_inputs(video_q, video_k, video_v, tiling, text, text_valid_lengths, gate)
    if tiling.device != video_q.device:
        raise ValueError(f"tiling is on {tiling.device}, video_q on {video_q.device}: build it with device=")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be a positive int (K key blocks per query block), got {keep!r}")
    scale = 1.0 / math.sqrt(video_q.shape[-1]) if scale is None else float(scale)
    num_video = tiling.num_tokens

    # 1. Tile the video tokens so that block i is cube i.
    q, k, v = tiling.tile(video_q), tiling.tile(video_k), tiling.tile(video_v)

    # 2-3. Coarse stage and the block selection it ranks.
    coarse = coarse_attention(q, k, v, tiling, scale)
    keys, values = k, v
    if text is not None:
        keys, values = torch.cat([k, text[1]], dim=1), torch.cat([v, text[2]], dim=1)
    index, counts = select_key_blocks(
        coarse.logits,
        keep,
        num_video_tokens=num_video,
        num_key_tokens=keys.shape[1],
        block_size=tiling.block_size,
    )
    key_valid = None if text_valid_lengths is None else text_valid_lengths.to(torch.int32) + num_video

    # 4. Fine stage over the selected 64x64 tiles (text blocks are among them).
    fine = block_sparse_attention(
        q,
        keys,
        values,
        index,
        counts,
        block_size=tiling.block_size,
        kv_valid_lengths=key_valid,
        scale=scale,
        backend=backend,
    )

    # 5. Gated coarse output (VSA: out = gate * out_coarse + out_fine), back to grid order.
    video_out = fine
    if gate is not None:
        dtype = coarse.output.dtype  # stage_dtype: float32 (float64), also under autocast
        with autocast_off(video_q.device):
            gated = torch.addcmul(fine.to(dtype), tiling.tile(gate).to(dtype), coarse.output)
        video_out = gated.to(video_q.dtype)
    video_out = tiling.untile(video_out)

    text_out = None
    if text is not None:
        mask = None if key_valid is None else KeyPaddingMask(valid_lengths=key_valid)
        text_out = attention(text[0], keys, values, mask=mask, scale=scale, backend=dense_backend)
    return VSAOutput(video_out, text_out)
