"""Typed errors of the conditioning package.

Every error is a ``ValueError`` (bad input values and shapes), so callers that only know the
standard library still catch them; the subclasses let tests and pipelines tell the causes apart.
Messages name the argument, what was expected and what arrived (ARCHITECTURE.md section 3).
"""

from __future__ import annotations

__all__ = [
    "ConditioningShapeError",
    "InpaintConditioningError",
    "MaskValueError",
    "ReferencePackingError",
    "TaskMixtureError",
    "TaskParameterError",
]


class InpaintConditioningError(ValueError):
    """Base class of every input error raised by ``skyreels_inpaint_conditioning``."""


class ConditioningShapeError(InpaintConditioningError):
    """A tensor's rank or size does not fit (video, mask, latent grid, VAE factors)."""


class MaskValueError(InpaintConditioningError):
    """A mask holds values other than 0 and 1, or has a dtype that cannot hold a binary mask."""


class TaskParameterError(InpaintConditioningError):
    """A task parameter is out of range (e.g. extension ``k`` outside ``1..F-1``)."""


class ReferencePackingError(InpaintConditioningError):
    """In-context references cannot be packed (channels, batch, sizes or patch divisibility)."""


class TaskMixtureError(InpaintConditioningError):
    """A task mixture is invalid: unknown task names, negative weights, or a sum other than 1."""
