"""The optimizer every training module builds: AdamW with the fastest exact implementation the
parameters allow.

PyTorch picks the per-parameter loop for CPU tensors by default. Its fused kernel does the same
update in one pass over every parameter, several times faster for the quickstart's ~320 small
tensors (``benchmarks/test_optimizer_step.py``; docs/training.md, "Throughput"), a few per cent of a
training step. Sharded (DTensor) parameters, or any device without the fused kernel, keep PyTorch's
own default, and so do runs under Lightning's mixed precision with gradient clipping: its
``16-mixed`` / ``bf16-mixed`` plugins refuse to clip the gradients of an optimizer that unscales them
inside its step, which the fused kernel declares (pass the module's ``trainer``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["adamw", "clipping_in_mixed_precision", "fused_adamw_supported"]

_FUSED_DEVICES = ("cpu", "cuda")


def fused_adamw_supported(parameters: Iterable[Tensor]) -> bool:
    """Whether ``torch.optim.AdamW(..., fused=True)`` takes every one of ``parameters``: plain
    (unsharded) floating-point tensors on one CPU or CUDA device."""
    devices = set()
    for param in parameters:
        if type(param) not in (torch.nn.Parameter, Tensor) or not param.is_floating_point():
            return False  # a DTensor (FSDP2's shards) or another tensor subclass; an integer tensor
        devices.add(param.device)
    return len(devices) == 1 and next(iter(devices)).type in _FUSED_DEVICES


#: Lightning precisions whose plugin refuses gradient clipping with an optimizer that unscales
#: gradients itself (``MixedPrecision.clip_gradients``).
_MIXED_PRECISIONS = ("16-mixed", "bf16-mixed")


def clipping_in_mixed_precision(trainer: Any) -> bool:
    """Whether a Lightning ``trainer`` (None: not attached) clips gradients under mixed precision,
    where a fused optimizer would be refused."""
    if trainer is None:
        return False
    clip = getattr(trainer, "gradient_clip_val", None)
    mixed = str(getattr(trainer, "precision", "")) in _MIXED_PRECISIONS
    return mixed and clip is not None and float(clip) > 0


def adamw(parameters: Iterable[Tensor], *, trainer: Any = None, **options: Any) -> torch.optim.AdamW:
    """``torch.optim.AdamW(parameters, **options)``, fused where :func:`fused_adamw_supported` and the
    ``trainer`` (the calling LightningModule's, or None) does not clip gradients under mixed precision
    (:func:`clipping_in_mixed_precision`). A resumed optimizer keeps the implementation saved in its
    checkpoint (``load_state_dict`` restores the parameter groups' options)."""
    params = list(parameters)
    if (
        "fused" not in options
        and "foreach" not in options
        and not clipping_in_mixed_precision(trainer)
        and fused_adamw_supported(params)
    ):
        options["fused"] = True
    return torch.optim.AdamW(params, **options)
