"""Guidance branches split across ranks (issue 15, docs/scale-out.md "Generation").

Classifier-free guidance runs the transformer on the conditional and unconditional branches stacked
along the batch (``skyreels_flow_matching.concat_conditions``): a batch of ``K·B`` for K branches.
With more ranks than sequence parallelism can use (Ulysses needs the video heads divisible by the sp
size), the spare ranks each take a slice of that batch instead of repeating it:
:func:`apply_guidance_parallel` puts a forward pre-hook on the transformer that keeps this rank's
slice of every batched input and a forward hook that all-gathers the outputs, so every rank still
returns the whole batch and the solver, guidance and output code are unchanged.

Ranks form a ``guidance x sp`` grid (:func:`generation_groups`): rank ``r`` is guidance slice
``r // sp`` and sequence shard ``r % sp``; its sp group is ``{g·sp + s}`` for its ``g``, its guidance
group ``{g·sp + s}`` for its ``s``. A batch that does not divide evenly is padded by repeating its last
sample and cut back after the gather. Generation only: the gather is not differentiable.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from skyreels_mmdit_blocks import JointAudioVideoTransformer

__all__ = [
    "GenerationGroups",
    "apply_guidance_parallel",
    "default_guidance_parallel",
    "generation_groups",
    "guidance_parallel_group",
]

# Inputs of ``JointAudioVideoTransformer.forward`` whose first dim is the batch (positions are batched
# only when 3-d; booleans and None pass through).
_BATCHED = (
    "video_latents",
    "audio_latents",
    "timestep",
    "text_tokens",
    "text_mask",
    "pooled_text",
    "guidance",
    "audio_timestep",
    "video_reference_latents",
    "audio_reference_latents",
    "video_key_mask",
    "audio_key_mask",
)
_MAYBE_BATCHED = ("video_positions", "audio_positions")
_POSITIONAL = ("video_latents", "audio_latents")


class GenerationGroups(NamedTuple):
    """The process groups of one rank in the ``guidance x sp`` grid (see the module docstring)."""

    guidance: dist.ProcessGroup
    sequence: dist.ProcessGroup


def default_guidance_parallel(world_size: int, video_heads: int) -> int:
    """Ranks left over by sequence parallelism: ``world_size / sp`` for the largest sp that divides both
    ``world_size`` and the video heads (8 ranks, 4 heads -> sp 4, guidance 2)."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size: expected a positive int, got {world_size!r}")
    if isinstance(video_heads, bool) or not isinstance(video_heads, int) or video_heads < 1:
        raise ValueError(f"video_heads: expected a positive int, got {video_heads!r}")
    sp = max(d for d in range(1, world_size + 1) if world_size % d == 0 and video_heads % d == 0)
    return world_size // sp


def generation_groups(guidance_parallel: int) -> GenerationGroups:
    """Split the default group into the ``guidance x sp`` grid. Collective: every rank calls it with
    the same ``guidance_parallel``, which must divide the world size."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("generation_groups needs torch.distributed initialised (torchrun)")
    world = dist.get_world_size()
    if isinstance(guidance_parallel, bool) or not isinstance(guidance_parallel, int) or guidance_parallel < 1:
        raise ValueError(f"guidance_parallel: expected a positive int, got {guidance_parallel!r}")
    if world % guidance_parallel:
        raise ValueError(
            f"guidance_parallel: expected a divisor of the world size {world}, got {guidance_parallel}"
        )
    sp = world // guidance_parallel
    rank = dist.get_rank()
    mine: dict[str, Any] = {}
    # new_group is collective over the default group: every rank creates every group, in one order.
    for g in range(guidance_parallel):
        group = dist.new_group([g * sp + s for s in range(sp)])
        if rank // sp == g:
            mine["sequence"] = group
    for s in range(sp):
        group = dist.new_group([g * sp + s for g in range(guidance_parallel)])
        if rank % sp == s:
            mine["guidance"] = group
    return GenerationGroups(guidance=mine["guidance"], sequence=mine["sequence"])


def guidance_parallel_group(model: nn.Module) -> dist.ProcessGroup | None:
    """The group ``model``'s batch is split over, or None."""
    return getattr(model, "_guidance_parallel_group", None)


def apply_guidance_parallel(model: JointAudioVideoTransformer, group: dist.ProcessGroup) -> nn.Module:
    """Split every forward's batch over ``group`` and all-gather the outputs, in place (module
    docstring). Every rank of ``group`` must call the model with the same inputs. A group of size 1
    leaves the model unchanged; the state dict is unchanged."""
    if not isinstance(model, JointAudioVideoTransformer):
        raise TypeError(f"model must be a JointAudioVideoTransformer; got {type(model).__name__}")
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("apply_guidance_parallel needs torch.distributed initialised (torchrun)")
    if not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"group must be a torch.distributed.ProcessGroup; got {type(group).__name__}")
    if guidance_parallel_group(model) is not None:
        raise ValueError("model: guidance parallelism is already applied")
    size = dist.get_world_size(group)
    if size == 1:
        return model
    rank = dist.get_rank(group)
    calls: list[int] = []  # the batch of the call in flight (forward calls do not nest)

    def split(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        named = dict(zip(_POSITIONAL, args, strict=False))
        named.update(kwargs)
        batch = int(named["video_latents"].shape[0])
        per_rank = -(-batch // size)
        calls.append(batch)
        for name, value in named.items():
            batched = name in _BATCHED or (name in _MAYBE_BATCHED and getattr(value, "ndim", 0) == 3)
            if batched and isinstance(value, torch.Tensor):
                named[name] = _pad(value, per_rank * size)[rank * per_rank : (rank + 1) * per_rank]
        args = tuple(named.pop(name) for name in _POSITIONAL[: len(args)])
        return args, named

    def gather(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        batch = calls.pop()
        return type(output)(*(_all_gather(part, group, size)[:batch] for part in output))

    model.register_forward_pre_hook(split, with_kwargs=True)
    model.register_forward_hook(gather, with_kwargs=True)
    model._guidance_parallel_group = group
    return model


def _pad(value: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - value.shape[0]
    if missing <= 0:
        return value
    return torch.cat([value, value[-1:].expand(missing, *value.shape[1:])])


def _all_gather(part: torch.Tensor, group: dist.ProcessGroup, size: int) -> torch.Tensor:
    part = part.contiguous()
    parts = [torch.empty_like(part) for _ in range(size)]
    dist.all_gather(parts, part, group=group)
    return torch.cat(parts)
