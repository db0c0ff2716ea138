"""Input checks shared by every text encoder (paper 3.1: text plus reference images and video clips).

Prompts are final strings (the combined visual + acoustic prompt is built by ``skyreels_v4.prompts``).
References arrive per prompt: ``images[i]`` is a sequence of ``[3, H, W]`` tensors and ``videos[i]`` a
sequence of ``[3, F, H, W]`` tensors, all float in [-1, 1] (the pixel convention of ARCHITECTURE.md 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from skyreels_v4.errors import NonFiniteError

__all__ = ["check_prompts", "check_references"]

# Resampling may overshoot slightly; anything further out was not converted to [-1, 1].
_RANGE_TOLERANCE = 1e-3


def check_prompts(prompts: object) -> list[str]:
    """``prompts`` as a list of str; TypeError/ValueError naming ``prompts[i]`` otherwise."""
    if isinstance(prompts, str):
        raise TypeError("prompts: expected a sequence of str, got a single str (wrap it in a list)")
    if not isinstance(prompts, Sequence):
        raise TypeError(f"prompts: expected a sequence of str, got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError("prompts: expected at least one prompt, got an empty sequence")
    out = []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompts[{i}]: expected str, got {type(prompt).__name__}")
        out.append(prompt)
    return out


def check_references(
    references: object, *, name: str, batch: int, ndim: int
) -> list[list[torch.Tensor]] | None:
    """Validate per-prompt references: ``ndim`` 3 for images ``[3, H, W]``, 4 for videos ``[3, F, H, W]``.

    Returns lists of tensors (unchanged) or None. Raises TypeError / ValueError / NonFiniteError naming
    ``name[i][j]``.
    """
    if references is None:
        return None
    layout = "[3, H, W]" if ndim == 3 else "[3, F, H, W]"
    if isinstance(references, torch.Tensor) or not isinstance(references, Sequence):
        raise TypeError(
            f"{name}: expected one sequence of {layout} tensors per prompt, got {type(references).__name__}"
        )
    if len(references) != batch:
        raise ValueError(f"{name}: expected {batch} entries (one per prompt), got {len(references)}")
    out: list[list[torch.Tensor]] = []
    for i, group in enumerate(references):
        if isinstance(group, torch.Tensor) or not isinstance(group, Sequence):
            raise TypeError(
                f"{name}[{i}]: expected a sequence of {layout} tensors, got {type(group).__name__}"
            )
        checked = []
        for j, ref in enumerate(group):
            where = f"{name}[{i}][{j}]"
            if not isinstance(ref, torch.Tensor):
                raise TypeError(f"{where}: expected a torch.Tensor {layout}, got {type(ref).__name__}")
            if ref.ndim != ndim or ref.shape[0] != 3:
                raise ValueError(f"{where}: expected shape {layout}, got {tuple(ref.shape)}")
            if not ref.is_floating_point():
                raise TypeError(f"{where}: expected a float tensor in [-1, 1], got {ref.dtype}")
            if min(ref.shape[1:]) < 1:
                raise ValueError(f"{where}: expected non-empty {layout}, got {tuple(ref.shape)}")
            if not bool(torch.isfinite(ref).all()):
                raise NonFiniteError(f"{where}: expected finite pixel values in [-1, 1], got NaN or inf")
            low, high = float(ref.min()), float(ref.max())
            if low < -1 - _RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
                raise ValueError(f"{where}: expected values in [-1, 1], got [{low:.4g}, {high:.4g}]")
            checked.append(ref)
        out.append(checked)
    return out
