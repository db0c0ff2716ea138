"""Match a prompt's references with the images, videos and audio the caller supplies (paper 3.3).

``@image_N`` is the N-th item of ``images`` (1-based), and so on for videos and audio. Every
reference must have an item, every item must be referenced, and an item must look like its kind
where that can be told without loading it:

* a path (``str`` / ``os.PathLike``) by its suffix (:data:`MEDIA_SUFFIXES`);
* an array or tensor by its number of dimensions: image ``[3, H, W]``, video ``[3, F, H, W]``,
  audio ``[channels, samples]`` (ARCHITECTURE.md 3, one item without the batch axis).

Anything else (a PIL image, a custom object) is passed through unchecked. The result lists each
distinct reference once, in order of first appearance: the order the pipeline packs them in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skyreels_v4.errors import ReferenceError_
from skyreels_v4.prompts.caption import StructuredCaption
from skyreels_v4.prompts.multishot import MultiShotPrompt
from skyreels_v4.prompts.references import Reference, ReferenceKind

__all__ = ["MEDIA_SUFFIXES", "ResolvedReference", "resolve_references"]

#: File suffixes (lowercase) that identify each kind of reference file.
MEDIA_SUFFIXES: dict[ReferenceKind, frozenset[str]] = {
    ReferenceKind.IMAGE: frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}),
    ReferenceKind.VIDEO: frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif"}),
    ReferenceKind.AUDIO: frozenset({".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus"}),
}
_NDIM = {ReferenceKind.IMAGE: 3, ReferenceKind.VIDEO: 4, ReferenceKind.AUDIO: 2}
_SHAPES = {
    ReferenceKind.IMAGE: "[3, H, W]",
    ReferenceKind.VIDEO: "[3, F, H, W]",
    ReferenceKind.AUDIO: "[channels, samples]",
}
_ARGUMENT = {ReferenceKind.IMAGE: "images", ReferenceKind.VIDEO: "videos", ReferenceKind.AUDIO: "audios"}


@dataclass(frozen=True)
class ResolvedReference:
    """A reference and the item supplied for it.

    Attributes:
        kind: image, video or audio.
        index: 1-based index into the supplied sequence of that kind.
        item: the supplied object (path, tensor, ...), unchanged.
        spelling: the reference as first written in the prompt (``"@Actor-0"``).
    """

    kind: ReferenceKind
    index: int
    item: Any
    spelling: str


def _a(kind: ReferenceKind) -> str:
    return f"an {kind.value}" if kind.value[0] in "aeiou" else f"a {kind.value}"


def _kind_problem(kind: ReferenceKind, item: object) -> str | None:
    """Why ``item`` cannot be a ``kind``, or ``None`` when it can (or when that cannot be told)."""
    expected = f"expected {_a(kind)} ({_SHAPES[kind]} or {_a(kind)} file)"
    if isinstance(item, str | os.PathLike):
        suffix = Path(item).suffix.lower()
        for other, suffixes in MEDIA_SUFFIXES.items():
            if suffix in suffixes and other is not kind:
                return f"{expected}, got a {suffix} file, which is {_a(other)}"
        return None
    ndim = getattr(item, "ndim", None)
    if not isinstance(ndim, int) or isinstance(ndim, bool):
        return None
    if ndim == _NDIM[kind]:
        return None
    shape = [int(n) for n in getattr(item, "shape", ())]
    other = next((k for k, n in _NDIM.items() if n == ndim), None)
    looks = f", which looks like {_a(other)}" if other is not None else ""
    return f"{expected}, got an array of shape {shape}{looks}"


def _as_items(value: object, name: str) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, str | bytes | os.PathLike) or not isinstance(value, Sequence):
        raise TypeError(f"{name}: expected a sequence (list or tuple) of items, got {type(value).__name__}")
    return tuple(value)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def resolve_references(
    prompt: StructuredCaption | MultiShotPrompt,
    *,
    images: Sequence[Any] | None = None,
    videos: Sequence[Any] | None = None,
    audios: Sequence[Any] | None = None,
) -> list[ResolvedReference]:
    """Check ``prompt``'s references against the supplied items and pair them up.

    Args:
        prompt: a parsed prompt (:func:`parse_prompt` or :func:`parse_multishot`).
        images, videos, audios: the supplied items; ``@image_N`` is ``images[N - 1]``.

    Returns:
        One :class:`ResolvedReference` per distinct reference, in order of first appearance.

    Raises:
        TypeError: ``prompt`` is not a parsed prompt, or an items argument is not a sequence.
        ReferenceError_: a reference without an item, an item never referenced, or an item that
            looks like another kind; the message lists every problem, naming the reference as
            written and what was supplied.
    """
    if not isinstance(prompt, StructuredCaption | MultiShotPrompt):
        raise TypeError(f"prompt: expected StructuredCaption or MultiShotPrompt, got {type(prompt).__name__}")
    supplied = {
        ReferenceKind.IMAGE: _as_items(images, "images"),
        ReferenceKind.VIDEO: _as_items(videos, "videos"),
        ReferenceKind.AUDIO: _as_items(audios, "audios"),
    }
    summary = ", ".join(f"{_ARGUMENT[kind]}: {len(items)}" for kind, items in supplied.items())
    problems: list[str] = []

    first: dict[tuple[ReferenceKind, int], Reference] = {}
    for reference in prompt.references:
        first.setdefault((reference.kind, reference.index), reference)

    for (kind, index), reference in first.items():
        items = supplied[kind]
        if index > len(items):
            others = [
                f"{_ARGUMENT[other]} has an item {index}"
                for other, other_items in supplied.items()
                if other is not kind and index <= len(other_items)
            ]
            hint = f" ({'; '.join(others)}: a different kind)" if others else ""
            problems.append(
                f"{reference.describe()} refers to {kind.value} {index}, but {_ARGUMENT[kind]} has "
                f"{_plural(len(items), 'item')}{hint}"
            )

    for kind, items in supplied.items():
        for position, item in enumerate(items):
            name = f"{_ARGUMENT[kind]}[{position}] (@{kind.value}_{position + 1})"
            if (kind, position + 1) not in first:
                problems.append(f"{name} is supplied but never referenced in the prompt")
            problem = _kind_problem(kind, item)
            if problem is not None:
                problems.append(f"{name}: {problem}")
    if problems:
        raise ReferenceError_(
            f"references do not match the supplied items ({summary}): " + "; ".join(problems)
        )
    return [
        ResolvedReference(kind=kind, index=index, item=supplied[kind][index - 1], spelling=reference.spelling)
        for (kind, index), reference in first.items()
    ]
