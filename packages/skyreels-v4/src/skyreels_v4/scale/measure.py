"""Measured CPU memory of a forward/backward, to check the planner (issue 15) against reality.

torch.profiler with ``profile_memory=True`` records every CPU allocation and free with the op that
made it. The net allocation over a forward (what is still allocated when it returns, minus its
outputs) is what autograd keeps for backward; the running sum over forward + backward, in time
order, gives the peak above the starting point. Parameters and optimizer state are allocated
before and are not part of either number.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile

__all__ = ["MeasuredMemory", "measure_training_memory"]


@dataclass(frozen=True)
class MeasuredMemory:
    """Bytes: ``stored`` kept from the end of forward for backward (outputs excluded); ``peak`` the
    highest allocation above the start during forward + backward; ``outputs`` the forward's outputs."""

    stored: int
    peak: int
    outputs: int


def _running_peak(events) -> int:
    timed = sorted(
        (e.time_range.start, e.self_cpu_memory_usage) for e in events if e.self_cpu_memory_usage != 0
    )
    level = peak = 0
    for _, delta in timed:
        level += delta
        peak = max(peak, level)
    return peak


def measure_training_memory(
    forward: Callable[[], tuple[torch.Tensor, ...]], loss: Callable[[tuple[torch.Tensor, ...]], torch.Tensor]
) -> MeasuredMemory:
    """Run ``outputs = forward()`` then ``loss(outputs).backward()`` under the profiler (CPU only)."""
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        outputs = forward()
    stored_total = sum(e.self_cpu_memory_usage for e in prof.events())
    output_bytes = sum(o.untyped_storage().nbytes() for o in outputs)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof_backward:
        loss(outputs).backward()
    backward_peak = _running_peak(prof_backward.events())
    forward_peak = _running_peak(prof.events())
    del outputs
    return MeasuredMemory(
        stored=stored_total - output_bytes,
        peak=max(forward_peak, stored_total + backward_peak),
        outputs=output_bytes,
    )
