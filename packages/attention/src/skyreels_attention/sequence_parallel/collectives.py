"""Differentiable collectives for sequence parallelism, all built on `all_to_all_single`.

Every backend (gloo, nccl) has `all_to_all_single` in every torch this package supports, and
all-gather / reduce-scatter are special cases of it, so one primitive carries everything. Each
autograd Function's backward is the adjoint of its forward (all-to-all <-> inverse all-to-all,
all-gather <-> reduce-scatter), so gradients are those of the single-process computation summed
over the group as docs/sequence-parallel.md explains.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather", "all_to_all", "check_group", "reduce_scatter"]


def _group_size(group: dist.ProcessGroup) -> int:
    return dist.get_world_size(group)


def _exchange(send_P: Tensor, group: dist.ProcessGroup) -> Tensor:
    """Chunk j of `send_P` (leading axis P) goes to rank j; returns the chunks received, by source."""
    recv_P = torch.empty_like(send_P)
    dist.all_to_all_single(recv_P, send_P, group=group)
    return recv_P


def _all_to_all(x: Tensor, group: dist.ProcessGroup, scatter_dim: int, gather_dim: int) -> Tensor:
    P = _group_size(group)
    if P == 1:
        return x
    # [.., P·n, ..] -> [P, .., n, ..]: chunk j of the scatter axis is sent to rank j.
    send = x.unflatten(scatter_dim, (P, x.shape[scatter_dim] // P)).movedim(scatter_dim, 0).contiguous()
    recv = _exchange(send, group)
    # Chunks arrive ordered by source rank, which becomes the outer index of the gather axis.
    return recv.movedim(0, gather_dim).flatten(gather_dim, gather_dim + 1)


def _all_gather(x: Tensor, group: dist.ProcessGroup, dim: int) -> Tensor:
    P = _group_size(group)
    if P == 1:
        return x
    recv = _exchange(x.unsqueeze(0).expand(P, *x.shape).contiguous(), group)
    return recv.movedim(0, dim).flatten(dim, dim + 1)


def _reduce_scatter(x: Tensor, group: dist.ProcessGroup, dim: int) -> Tensor:
    P = _group_size(group)
    if P == 1:
        return x
    send = x.unflatten(dim, (P, x.shape[dim] // P)).movedim(dim, 0).contiguous()
    return _exchange(send, group).sum(0)  # summed in rank order: identical on any run


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup, scatter_dim: int, gather_dim: int) -> Tensor:
        ctx.group, ctx.scatter_dim, ctx.gather_dim = group, scatter_dim, gather_dim
        return _all_to_all(x, group, scatter_dim, gather_dim)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        # An all-to-all is a permutation of data across ranks; its adjoint is the inverse permutation.
        return _all_to_all(grad, ctx.group, ctx.gather_dim, ctx.scatter_dim), None, None, None


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup, dim: int) -> Tensor:
        ctx.group, ctx.dim = group, dim
        return _all_gather(x, group, dim)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        return _reduce_scatter(grad, ctx.group, ctx.dim), None, None


class _ReduceScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup, dim: int) -> Tensor:
        ctx.group, ctx.dim = group, dim
        return _reduce_scatter(x, group, dim)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        return _all_gather(grad, ctx.group, ctx.dim), None, None


def check_group(group: object) -> None:
    """Raise unless torch.distributed is initialised and `group` is a ProcessGroup."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "group: torch.distributed is not initialised; call torch.distributed.init_process_group first"
        )
    if not isinstance(group, dist.ProcessGroup):
        raise TypeError(
            f"group: expected a torch.distributed.ProcessGroup (for a DeviceMesh use "
            f"mesh['sequence_parallel'].get_group()), got {type(group).__name__}"
        )


def _check_divisible(x: Tensor, dim: int, P: int, name: str, what: str) -> int:
    dim = dim % x.ndim
    if x.shape[dim] % P != 0:
        raise ValueError(
            f"{name}: {what} (axis {dim}, size {x.shape[dim]}) must be divisible by the group size "
            f"P={P}; got shape {tuple(x.shape)}"
        )
    return dim


def all_to_all(x: Tensor, *, group: dist.ProcessGroup, scatter_dim: int, gather_dim: int) -> Tensor:
    """Differentiable all-to-all: split `scatter_dim` into P chunks, send chunk j to rank j, and
    concatenate the received chunks along `gather_dim` in rank order.

    Shape: `scatter_dim` shrinks P-fold, `gather_dim` grows P-fold. Backward is the inverse all-to-all.
    """
    check_group(group)
    scatter_dim = _check_divisible(x, scatter_dim, _group_size(group), "x", "the scatter axis")
    if _group_size(group) == 1:
        return x
    return _AllToAll.apply(x, group, scatter_dim, gather_dim % x.ndim)


def all_gather(x: Tensor, *, group: dist.ProcessGroup, dim: int) -> Tensor:
    """Differentiable all-gather along `dim` in rank order (the axis grows P-fold).

    The result is replicated; backward is a reduce-scatter (sum), so a loss on it must be divided
    by P on every rank.
    """
    check_group(group)
    if _group_size(group) == 1:
        return x
    return _AllGather.apply(x, group, dim % x.ndim)


def reduce_scatter(x: Tensor, *, group: dist.ProcessGroup, dim: int) -> Tensor:
    """Differentiable reduce-scatter (sum): rank r gets chunk r of `dim` summed over the group.

    Backward is an all-gather.
    """
    check_group(group)
    dim = _check_divisible(x, dim, _group_size(group), "x", "the scattered axis")
    if _group_size(group) == 1:
        return x
    return _ReduceScatter.apply(x, group, dim)
