"""The typed errors of skyreels-v4: every user-facing failure is one of these (or a plain
``TypeError`` / ``ValueError`` raised by a lower package), and its message names the argument or
file, what was expected and what came.

``SkyReelsError`` subclasses ``ValueError`` so that callers catching ``ValueError`` keep working;
``FileFormatError`` additionally carries the offending path.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ConfigMismatchError",
    "FileFormatError",
    "NonFiniteError",
    "PreflightError",
    "PromptError",
    "ReferenceError_",
    "SkyReelsError",
]


class SkyReelsError(ValueError):
    """Base class of the toolkit's own errors (a ``ValueError``: the input was wrong)."""


class FileFormatError(SkyReelsError):
    """A file is missing, truncated, corrupt or not what was expected. ``path`` names it."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class NonFiniteError(SkyReelsError):
    """A tensor that must be finite holds NaN or inf; the message names where it came from."""


class PreflightError(SkyReelsError):
    """A check before work starts failed (output not writable, data does not match the model)."""


class ConfigMismatchError(SkyReelsError):
    """A run folder was made by a different configuration than the one given."""


class PromptError(SkyReelsError):
    """A prompt is malformed (unbalanced tags, bad shot markup, ...)."""


class ReferenceError_(PromptError):  # the builtin ReferenceError means something else
    """An ``@image_N`` / ``@video_N`` / ``@audio_N`` reference is missing, unused or of the wrong kind."""
