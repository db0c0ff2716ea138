"""Ulysses attention: all-to-all sequence <-> heads around any dense attention backend.

Video tokens are sharded along the sequence over a process group of P ranks; text/audio tokens
are short and replicated (ARCHITECTURE.md section 6). Per call, on every rank:

    q, k, v           [B, Ls, H, D]   this rank's sequence shard
    1. all-to-all  -> [B, Lp, Hl, D]  the whole (padded) sequence, this rank's heads
    2. replicated     [B, Lt, H, D] -> [B, Lt, Hl, D]  sliced to the same heads, no communication
    3. attention over the joint sequence [sharded ; replicated] for Hl heads
    4. all-to-all  -> [B, Ls, H, D]   sharded output; all-gather -> [B, Lt, H, D] replicated output

Legend: B batch, Ls shard length, P group size, Lp = P·Ls padded sequence, L <= Lp real length,
H heads, Hl = H/P, D head dim, Lt replicated tokens. Name suffixes: `_BLhD` is [B, Lp, Hl, D] and
`_BThD` is [B, Lt, Hl, D].

Gradients follow the convention of docs/sequence-parallel.md: per-rank gradients of replicated
tensors are partial (sum them over the group), and a loss on replicated outputs must be divided by
P on every rank.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..api import attention, get_backend
from ..masks import KeyPaddingMask
from ..value_checks import value_checks_enabled
from .collectives import all_gather, all_to_all, check_group

__all__ = [
    "AttentionFn",
    "UlyssesAttention",
    "UlyssesAttentionOutput",
    "ulysses_attention",
    "ulysses_cross_attention",
]


class AttentionFn(Protocol):
    """Dense attention: q `[B, Lq, H, D]`, k/v `[B, Lk, H, D]` -> `[B, Lq, H, D]`."""

    def __call__(
        self, q: Tensor, k: Tensor, v: Tensor, *, mask: KeyPaddingMask | None, scale: float | None
    ) -> Tensor: ...


class UlyssesAttentionOutput(NamedTuple):
    """out: `[B, Ls, H, D]`, this rank's shard (zeros at padded positions, which get no gradient).
    replicated_out: `[B, Lt, H, D]`, identical on every rank; None without replicated queries."""

    out: Tensor
    replicated_out: Tensor | None


def _check_same(name: str, t: object, like: Tensor, shape: tuple[int, ...] | None = None) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 4:
        raise ValueError(f"{name}: expected 4 dims [B, L, H, D], got shape {list(t.shape)}")
    if t.dtype != like.dtype or t.device != like.device:
        raise TypeError(f"{name}: expected {like.dtype} on {like.device} like q, got {t.dtype} on {t.device}")
    if shape is not None and tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected shape {list(shape)}, got {list(t.shape)}")


def _check_sharded(x: Tensor, name: str, P: int, global_seq_len: int | None) -> int:
    """Checks of a sharded [B, Ls, H, D] tensor and of global_seq_len; returns the real length L."""
    Ls, H = x.shape[1], x.shape[2]
    if Ls < 1:
        raise ValueError(
            f"{name}: expected a non-empty sequence shard [B, Ls >= 1, H, D], got {list(x.shape)}"
        )
    if H % P != 0:
        raise ValueError(
            f"{name}: the number of heads H={H} must be divisible by the sequence-parallel degree P={P} "
            f"(Ulysses gives every rank H/P heads); got {name} of shape {list(x.shape)}"
        )
    if global_seq_len is None:
        return P * Ls
    if (
        isinstance(global_seq_len, bool)
        or not isinstance(global_seq_len, int)
        or not 1 <= global_seq_len <= P * Ls
    ):
        raise ValueError(f"global_seq_len: expected an int in [1, P·Ls = {P * Ls}], got {global_seq_len!r}")
    return global_seq_len


def _local_attention(backend: str | None, attention_fn: AttentionFn | None) -> AttentionFn:
    if attention_fn is not None and backend is not None:
        raise ValueError(
            f"backend, attention_fn: give one or neither, got backend={backend!r} and a callable"
        )
    return attention_fn if attention_fn is not None else partial(attention, backend=backend)


def _validate(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    P: int,
    global_seq_len: int | None,
    replicated: tuple[Tensor | None, Tensor | None, Tensor | None],
    replicated_mask: object,
) -> int:
    """Check every argument before any communication; returns the real sequence length L."""
    _check_same("q", q, q)
    _check_same("k", k, q, tuple(q.shape))
    _check_same("v", v, q, tuple(q.shape))
    B, _, H, D = q.shape
    L = _check_sharded(q, "q", P, global_seq_len)
    rq, rk, rv = replicated
    if (rk is None) != (rv is None):
        raise ValueError("replicated_k, replicated_v: pass both or neither")
    if rq is not None and rk is None:
        raise ValueError(
            "replicated_q: needs replicated_k and replicated_v (the replicated tokens are keys too)"
        )
    if rk is not None:
        _check_same("replicated_k", rk, q)
        Lt = rk.shape[1]
        expected = (B, Lt, H, D)
        if tuple(rk.shape) != expected or Lt < 1:
            raise ValueError(
                f"replicated_k: expected [B, Lt >= 1, H, D] with B, H, D of q = {B}, {H}, {D}, "
                f"got {list(rk.shape)}"
            )
        _check_same("replicated_v", rv, q, expected)
        if rq is not None:
            _check_same("replicated_q", rq, q, expected)
    if replicated_mask is not None:
        if rk is None:
            raise ValueError("replicated_mask: given without replicated_k / replicated_v")
        if not isinstance(replicated_mask, KeyPaddingMask):
            raise TypeError(
                f"replicated_mask: expected a KeyPaddingMask over the replicated tokens, got "
                f"{type(replicated_mask).__name__} (dense masks over the joint sequence are not supported)"
            )
        lengths = replicated_mask.valid_lengths
        out_of_range = value_checks_enabled() and bool(((lengths < 0) | (lengths > rk.shape[1])).any())
        if tuple(lengths.shape) != (B,) or out_of_range:
            raise ValueError(
                f"replicated_mask.valid_lengths: expected {B} values in [0, Lt={rk.shape[1]}], "
                f"got {lengths.tolist()}"
            )
    return L


def ulysses_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    group: dist.ProcessGroup,
    global_seq_len: int | None = None,
    replicated_q: Tensor | None = None,
    replicated_k: Tensor | None = None,
    replicated_v: Tensor | None = None,
    replicated_mask: KeyPaddingMask | None = None,
    scale: float | None = None,
    backend: str | None = None,
    attention_fn: AttentionFn | None = None,
) -> UlyssesAttentionOutput:
    """Attention over a sequence sharded along its length, plus optional replicated tokens.

    Args:
        q, k, v: `[B, Ls, H, D]`, rank r's contiguous shard r of the global sequence (see
            `shard_sequence`). Every rank passes the same shapes; H must be divisible by P.
        group: the sequence-parallel process group (from a mesh: `mesh["sequence_parallel"].get_group()`).
        global_seq_len: real length L of the sharded sequence when it was padded to P·Ls; padded
            keys are masked. Default P·Ls (no padding).
        replicated_q, replicated_k, replicated_v: `[B, Lt, H, D]`, identical on every rank (text,
            audio), joined after the sharded tokens. k and v without q: the replicated tokens are
            only keys.
        replicated_mask: `KeyPaddingMask` whose `valid_lengths [B]` count the valid replicated keys.
        scale: logit scale, default `D ** -0.5`.
        backend: skyreels-attention backend name for the local attention (None: automatic).
        attention_fn: any other dense attention callable instead (exclusive with `backend`).

    Returns:
        `UlyssesAttentionOutput(out [B, Ls, H, D], replicated_out [B, Lt, H, D] | None)`.
    """
    check_group(group)
    attend = _local_attention(backend, attention_fn)
    P, rank = dist.get_world_size(group), dist.get_rank(group)
    L = _validate(q, k, v, P, global_seq_len, (replicated_q, replicated_k, replicated_v), replicated_mask)
    B, Ls, H, _ = q.shape
    Lp, Hl = P * Ls, H // P
    n_pad = Lp - L  # padding tokens at the global end of the sharded sequence

    # 1. Sequence -> heads for q, k and v in one all-to-all: [3, B, Ls, H, D] -> [3, B, Lp, Hl, D].
    qkv = all_to_all(torch.stack((q, k, v)), group=group, scatter_dim=3, gather_dim=2)
    q_BLhD, k_BLhD, v_BLhD = qkv.unbind(0)

    # 2. Join the replicated tokens, sliced to this rank's heads (the heads chunk r that step 1 kept).
    # Keys are ordered [real sharded ; replicated ; sharded padding] so that every valid key lies in a
    # prefix and one KeyPaddingMask expresses both paddings. Key order does not change attention.
    valid_keys = None
    if replicated_k is not None:
        heads = slice(rank * Hl, (rank + 1) * Hl)
        rk_BThD, rv_BThD = replicated_k[:, :, heads], replicated_v[:, :, heads]
        k_BLhD = torch.cat((k_BLhD[:, :L], rk_BThD, k_BLhD[:, L:]), dim=1)
        v_BLhD = torch.cat((v_BLhD[:, :L], rv_BThD, v_BLhD[:, L:]), dim=1)
        if replicated_q is not None:
            q_BLhD = torch.cat((q_BLhD, replicated_q[:, :, heads]), dim=1)
        if replicated_mask is not None:
            valid_keys = replicated_mask.valid_lengths.to(q.device) + L
        elif n_pad:
            valid_keys = torch.full((B,), L + replicated_k.shape[1], device=q.device)
    elif n_pad:
        valid_keys = torch.full((B,), L, device=q.device)
    mask = None if valid_keys is None else KeyPaddingMask(valid_keys)

    # 3. Plain dense attention over the whole joint sequence for this rank's Hl heads.
    out_BLhD = attend(q_BLhD, k_BLhD, v_BLhD, mask=mask, scale=scale)

    # 4. Split; zero the padded query rows (so they pass no gradient); swap heads back to sequence.
    out_video_BLhD, out_replicated_BThD = out_BLhD[:, :Lp], out_BLhD[:, Lp:]
    if n_pad:
        out_video_BLhD = nn.functional.pad(out_video_BLhD[:, :L], (0, 0, 0, 0, 0, n_pad))
    out = all_to_all(out_video_BLhD, group=group, scatter_dim=1, gather_dim=2)
    replicated_out = None
    if replicated_q is not None:
        replicated_out = all_gather(out_replicated_BThD, group=group, dim=2)
    return UlyssesAttentionOutput(out, replicated_out)


def ulysses_cross_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    group: dist.ProcessGroup,
    global_seq_len: int | None = None,
    scale: float | None = None,
    backend: str | None = None,
    attention_fn: AttentionFn | None = None,
) -> Tensor:
    """Replicated queries attending to a sharded sequence, e.g. audio reading video (paper eq. 5).

    Args:
        q: `[B, Lq, H, D]`, identical on every rank.
        k, v: `[B, Ls, H, D]`, rank r's shard of the global key sequence; H divisible by P.
        group, global_seq_len, scale, backend, attention_fn: as in `ulysses_attention`.

    Returns:
        `[B, Lq, H, D]`, identical on every rank (a loss on it is divided by P; the gradient of `q`
        on each rank is partial). The other direction, sharded queries reading replicated keys
        (video reading audio or text), needs no communication: call `attention` on the shard.
    """
    check_group(group)
    attend = _local_attention(backend, attention_fn)
    P, rank = dist.get_world_size(group), dist.get_rank(group)
    _check_same("q", q, q)
    _check_same("k", k, q)
    _check_same("v", v, q, tuple(k.shape))
    if (q.shape[0], q.shape[2], q.shape[3]) != (k.shape[0], k.shape[2], k.shape[3]):
        raise ValueError(
            f"q, k: expected the same B, H, D ([B, Lq, H, D] vs [B, Ls, H, D]), got {list(q.shape)} "
            f"and {list(k.shape)}"
        )
    L = _check_sharded(k, "k", P, global_seq_len)
    B, Ls, H, _ = k.shape
    Hl, n_pad = H // P, P * Ls - L

    # Sequence -> heads for k and v; this rank's heads of the replicated queries; attend; gather heads.
    k_BLhD, v_BLhD = all_to_all(torch.stack((k, v)), group=group, scatter_dim=3, gather_dim=2).unbind(0)
    mask = KeyPaddingMask(torch.full((B,), L, device=q.device)) if n_pad else None
    out_BQhD = attend(q[:, :, rank * Hl : (rank + 1) * Hl], k_BLhD, v_BLhD, mask=mask, scale=scale)
    return all_gather(out_BQhD, group=group, dim=2)


class UlyssesAttention(nn.Module):
    """`ulysses_attention` with the group and the local attention chosen once, at construction.

    A drop-in for a dense attention module when a model is parallelised (torchtitan style: the
    model code stays single-device; a parallelize step swaps this in).
    """

    def __init__(
        self,
        *,
        group: dist.ProcessGroup,
        backend: str | None = None,
        attention_fn: AttentionFn | None = None,
    ) -> None:
        super().__init__()
        check_group(group)
        _local_attention(backend, attention_fn)  # conflicting arguments fail here, not mid-forward
        if backend is not None:
            get_backend(backend)  # an unknown name fails here, not mid-forward
        self.group, self.backend, self.attention_fn = group, backend, attention_fn

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        global_seq_len: int | None = None,
        replicated_q: Tensor | None = None,
        replicated_k: Tensor | None = None,
        replicated_v: Tensor | None = None,
        replicated_mask: KeyPaddingMask | None = None,
        scale: float | None = None,
    ) -> UlyssesAttentionOutput:
        """See `ulysses_attention`; shapes `[B, Ls, H, D]` sharded, `[B, Lt, H, D]` replicated."""
        return ulysses_attention(
            q,
            k,
            v,
            group=self.group,
            global_seq_len=global_seq_len,
            replicated_q=replicated_q,
            replicated_k=replicated_k,
            replicated_v=replicated_v,
            replicated_mask=replicated_mask,
            scale=scale,
            backend=self.backend,
            attention_fn=self.attention_fn,
        )

    def extra_repr(self) -> str:
        local = "attention_fn" if self.attention_fn is not None else f"backend={self.backend or 'auto'}"
        return f"degree={dist.get_world_size(self.group)}, {local}"
