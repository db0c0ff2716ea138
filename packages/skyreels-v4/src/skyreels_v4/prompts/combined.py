"""The combined visual + acoustic prompt fed to the text encoder (paper section 3.1).

The paper encodes "a combined prompt that concatenates visual and acoustic descriptions" with a
single frozen MMLM, and trains its last stages on structured captions "in a standardized
descriptive order" (3.4.3). :func:`combined_prompt` produces that text:

* :attr:`SegmentOrder.STANDARD` (default): the visual description, then ``<text>``,
  ``<dialogue>``, ``<singing>``, ``<sfx>``, ``<bgm>`` segments (each kind in written order). The
  tags stay in the text: they are the special tokens the captions were trained with.
* :attr:`SegmentOrder.AS_WRITTEN`: the canonical rendering, segments where the user put them
  (keeps "who says what" when dialogue is interleaved with the people who speak it).

A multi-shot prompt becomes its common caption (if any) followed by one line per shot,
``Shot k (a-b s): <caption>``, with times in seconds from the start of the clip.
"""

from __future__ import annotations

import enum

from skyreels_v4.prompts.caption import Segment, StructuredCaption, Tag, join_pieces
from skyreels_v4.prompts.multishot import MultiShotPrompt

__all__ = ["SegmentOrder", "combined_prompt", "format_seconds"]


class SegmentOrder(enum.Enum):
    """Where tagged segments go in the combined prompt."""

    STANDARD = "standard"
    AS_WRITTEN = "as_written"


def format_seconds(seconds: float) -> str:
    """Seconds with at most three decimals and no trailing zeros: ``2.0 -> '2'``, ``2.25 -> '2.25'``."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _caption_text(caption: StructuredCaption, order: SegmentOrder) -> str:
    if order is SegmentOrder.AS_WRITTEN:
        return caption.render()
    parts = [caption.visual] if caption.visual else []
    parts += [Segment(content, tag).render() for tag in Tag for content in caption.tagged(tag)]
    return join_pieces(parts)


def combined_prompt(
    prompt: StructuredCaption | MultiShotPrompt, *, order: SegmentOrder = SegmentOrder.STANDARD
) -> str:
    """The single text the MMLM encoder reads (module docstring).

    Raises:
        TypeError: ``prompt`` is not a parsed prompt, or ``order`` not a :class:`SegmentOrder`.
    """
    if not isinstance(order, SegmentOrder):
        raise TypeError(f"order: expected a SegmentOrder, got {order!r}")
    if isinstance(prompt, StructuredCaption):
        return _caption_text(prompt, order)
    if not isinstance(prompt, MultiShotPrompt):
        raise TypeError(f"prompt: expected StructuredCaption or MultiShotPrompt, got {type(prompt).__name__}")
    lines = [_caption_text(prompt.common, order)] if prompt.common.segments else []
    for k, (shot, (start, end)) in enumerate(zip(prompt.shots, prompt.spans, strict=True), start=1):
        span = f"{format_seconds(start)}-{format_seconds(end)} s"
        lines.append(f"Shot {k} ({span}): {_caption_text(shot.caption, order)}")
    return "\n".join(lines)
