"""Structured captions (paper section 3.4.3): free visual text plus ``<text>``, ``<dialogue>``,
``<singing>``, ``<sfx>`` and ``<bgm>`` segments, parsed into a :class:`StructuredCaption`.

Syntax (docs/prompts.md has the full table):

* Free text outside tags is the visual description; it may be split by tags into several pieces.
* ``<tag>content</tag>`` with ``tag`` one of :class:`Tag` (lowercase). Tags do not nest, must be
  closed, and their content may not be blank. ``<`` and ``>`` appear only as parts of tags.
* References (``@image_1``, ``@Actor-0``, ...) may appear anywhere (:mod:`.references`).
* Whitespace runs become one space; control characters other than tab/newline/CR are rejected.

The canonical text (:meth:`StructuredCaption.render`) joins the segments with single spaces (none
before a visual piece that starts with closing punctuation) and ``parse_prompt(c.render()) == c``
for every caption ``c``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from skyreels_v4.errors import PromptError
from skyreels_v4.prompts.references import Reference, scan_references

__all__ = [
    "DEFAULT_MAX_PROMPT_CHARS",
    "ParsedPrompt",
    "Segment",
    "StructuredCaption",
    "Tag",
    "check_prompt_text",
    "join_pieces",
    "parse_prompt",
]

#: Longest prompt accepted by default (characters). Text encoders truncate far below this
#: (a few hundred tokens), so anything longer is a mistake (a pasted file, a runaway template).
DEFAULT_MAX_PROMPT_CHARS = 10_000


class Tag(enum.Enum):
    """The special tokens of the paper's structured captions, in their standard order."""

    TEXT = "text"  # in-video text (signs, captions on screen)
    DIALOGUE = "dialogue"  # speech content
    SINGING = "singing"  # sung lyrics / singing content
    SFX = "sfx"  # sound effects
    BGM = "bgm"  # background music

    @property
    def open(self) -> str:
        return f"<{self.value}>"

    @property
    def close(self) -> str:
        return f"</{self.value}>"


_TAG_NAMES = {tag.value: tag for tag in Tag}
_KNOWN = ", ".join(f"<{name}>" for name in _TAG_NAMES)
# Control characters (C0 except tab/newline/CR, DEL, C1) and lone surrogates (not encodable).
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_ANGLE = re.compile(r"[<>]")
_TAG_AT = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9_-]*)>")
_SPACE = re.compile(r"\s+")


def _excerpt(text: str, offset: int, width: int = 12) -> str:
    return repr(text[max(0, offset - width) : offset + width])


def _normalise(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


_NO_SPACE_BEFORE = tuple(".,;:!?)]}")


def join_pieces(pieces: list[str]) -> str:
    """Join caption pieces with one space, except before closing punctuation (``<text>OPEN</text>.``)."""
    out = ""
    for piece in pieces:
        if out and not piece.startswith(_NO_SPACE_BEFORE):
            out += " "
        out += piece
    return out


def check_prompt_text(
    text: object, *, what: str = "prompt", max_chars: int = DEFAULT_MAX_PROMPT_CHARS
) -> str:
    """Check that ``text`` is a string of at most ``max_chars`` characters without control characters.

    Raises:
        TypeError: ``text`` is not a ``str``.
        PromptError: too long, or a control character / lone surrogate (its offset named).
    """
    if not isinstance(text, str):
        raise TypeError(f"{what}: expected str, got {type(text).__name__}")
    if len(text) > max_chars:
        raise PromptError(f"{what}: expected at most {max_chars} characters, got {len(text)}")
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        raise PromptError(
            f"{what} at character {bad.start()}: control character {bad.group()!r} is not allowed "
            "(only tab, newline and carriage return)"
        )
    return text


@dataclass(frozen=True)
class Segment:
    """One piece of a caption: visual text (``tag is None``) or the content of one tag.

    ``text`` is normalised on construction (whitespace runs -> one space, stripped); it must not be
    blank and must not contain ``<``, ``>`` or control characters.
    """

    text: str
    tag: Tag | None = None

    def __post_init__(self) -> None:
        if self.tag is not None and not isinstance(self.tag, Tag):
            raise TypeError(f"Segment.tag: expected a Tag or None, got {self.tag!r}")
        check_prompt_text(self.text, what="Segment.text")
        name = "visual text" if self.tag is None else self.tag.open
        angle = _ANGLE.search(self.text)
        if angle is not None:
            raise PromptError(
                f"Segment.text ({name}) at character {angle.start()}: {angle.group()!r} is not allowed "
                "inside a segment"
            )
        normalised = _normalise(self.text)
        if not normalised:
            raise PromptError(f"Segment.text ({name}): expected non-blank text, got {self.text!r}")
        object.__setattr__(self, "text", normalised)

    def render(self) -> str:
        return self.text if self.tag is None else f"{self.tag.open}{self.text}{self.tag.close}"


@dataclass(frozen=True)
class StructuredCaption:
    """A parsed prompt: its segments in written order, and the references they contain.

    Attributes:
        segments: visual and tagged segments in the order written. Adjacent visual segments are
            merged on construction so that every caption has exactly one canonical form.
        references: every reference in the segments, in order (repeats included); derived.

    Use :func:`parse_prompt` to read text, :meth:`from_parts` to build one in standard order, and
    :meth:`render` for the canonical text.
    """

    segments: tuple[Segment, ...]
    references: tuple[Reference, ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        segments = tuple(self.segments)
        merged: list[Segment] = []
        for i, segment in enumerate(segments):
            if not isinstance(segment, Segment):
                raise TypeError(f"StructuredCaption.segments[{i}]: expected a Segment, got {segment!r}")
            if merged and segment.tag is None and merged[-1].tag is None:
                merged[-1] = Segment(join_pieces([merged[-1].text, segment.text]))
            else:
                merged.append(segment)
        object.__setattr__(self, "segments", tuple(merged))
        references: list[Reference] = []
        for i, segment in enumerate(merged):
            references += scan_references(segment.text, where=f"segments[{i}]")
        object.__setattr__(self, "references", tuple(references))

    @classmethod
    def from_parts(
        cls,
        visual: str = "",
        *,
        text: tuple[str, ...] | list[str] = (),
        dialogue: tuple[str, ...] | list[str] = (),
        singing: tuple[str, ...] | list[str] = (),
        sfx: tuple[str, ...] | list[str] = (),
        bgm: tuple[str, ...] | list[str] = (),
    ) -> StructuredCaption:
        """A caption in standard order: visual, then in-video text, dialogue, singing, sfx, bgm."""
        segments = [Segment(visual)] if visual.strip() else []
        for tag, contents in zip(Tag, (text, dialogue, singing, sfx, bgm), strict=True):
            if isinstance(contents, str):
                raise TypeError(f"{tag.value}: expected a sequence of strings, got a single str")
            segments += [Segment(content, tag) for content in contents]
        return cls(tuple(segments))

    @property
    def visual(self) -> str:
        """The visual description: all untagged pieces joined with one space."""
        return join_pieces([s.text for s in self.segments if s.tag is None])

    def tagged(self, tag: Tag) -> tuple[str, ...]:
        """The contents of every ``tag`` segment, in order."""
        return tuple(s.text for s in self.segments if s.tag is tag)

    @property
    def in_video_text(self) -> tuple[str, ...]:
        return self.tagged(Tag.TEXT)

    @property
    def dialogue(self) -> tuple[str, ...]:
        return self.tagged(Tag.DIALOGUE)

    @property
    def singing(self) -> tuple[str, ...]:
        return self.tagged(Tag.SINGING)

    @property
    def sfx(self) -> tuple[str, ...]:
        return self.tagged(Tag.SFX)

    @property
    def bgm(self) -> tuple[str, ...]:
        return self.tagged(Tag.BGM)

    @property
    def has_tags(self) -> bool:
        return any(s.tag is not None for s in self.segments)

    def render(self) -> str:
        """The canonical text: segments in written order, joined by single spaces (none before a
        visual piece that starts with closing punctuation)."""
        return join_pieces([s.render() for s in self.segments])


#: ``parse_prompt``'s result; the same class as :class:`StructuredCaption`.
ParsedPrompt = StructuredCaption


def parse_prompt(
    text: str,
    *,
    max_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    allow_empty: bool = False,
    where: str = "prompt",
) -> StructuredCaption:
    """Parse a structured caption.

    Args:
        text: the prompt.
        max_chars: longest accepted prompt.
        allow_empty: accept a blank prompt (an empty caption, e.g. for unconditional generation).
        where: what the text is, for error messages (``"prompt"``, ``"shot 2"``).

    Raises:
        TypeError: ``text`` is not a ``str``.
        PromptError: unknown, unbalanced, nested or empty tags, a stray ``<`` or ``>``, a malformed
            reference, a control character, an over-long or blank prompt. The message names the
            problem and its character offset in ``text``.
    """
    check_prompt_text(text, what=where, max_chars=max_chars)
    segments: list[Segment] = []
    open_tag: Tag | None = None
    open_at = 0
    piece_start = 0  # where the current (visual or tag content) piece starts
    position = 0
    while True:
        angle = _ANGLE.search(text, position)
        if angle is None:
            break
        at = angle.start()
        here = f"{where} at character {at} ({_excerpt(text, at)})"
        match = _TAG_AT.match(text, at)
        if angle.group() == ">" or match is None:
            raise PromptError(
                f"{here}: stray {angle.group()!r}; '<' and '>' are only allowed in the tags {_KNOWN} "
                "(write them out in words)"
            )
        closing, name = match.group(1) == "/", match.group(2)
        tag = _TAG_NAMES.get(name)
        if tag is None:
            hint = " (tags are lowercase)" if name.lower() in _TAG_NAMES else ""
            raise PromptError(f"{here}: unknown tag <{match.group(1)}{name}>{hint}; expected one of {_KNOWN}")
        piece = text[piece_start:at]
        if not closing:
            if open_tag is not None:
                raise PromptError(
                    f"{here}: {tag.open} inside {open_tag.open} opened at character {open_at}; "
                    "tags do not nest"
                )
            if piece.strip():
                segments.append(Segment(piece))
                _check_references(piece, piece_start, where)
            open_tag, open_at = tag, at
        else:
            if open_tag is None:
                raise PromptError(f"{here}: {tag.close} closes nothing (no {tag.open} is open)")
            if tag is not open_tag:
                raise PromptError(
                    f"{here}: {tag.close} does not match {open_tag.open} opened at character {open_at}"
                )
            if not piece.strip():
                raise PromptError(
                    f"{where} at character {open_at}: empty {tag.open}{tag.close}; "
                    "expected text inside the tag"
                )
            _check_references(piece, piece_start, where)
            segments.append(Segment(piece, tag))
            open_tag = None
        position = piece_start = match.end()
    if open_tag is not None:
        raise PromptError(
            f"{where} at character {open_at} ({_excerpt(text, open_at)}): {open_tag.open} is never closed "
            f"(expected {open_tag.close})"
        )
    tail = text[piece_start:]
    if tail.strip():
        _check_references(tail, piece_start, where)
        segments.append(Segment(tail))
    if not segments and not allow_empty:
        raise PromptError(f"{where}: expected a description, got a blank prompt {text[:40]!r}")
    return StructuredCaption(tuple(segments))


def _check_references(piece: str, offset: int, where: str) -> None:
    # Validate references against their offset in the source text (the caption re-scans its
    # normalised segments, where offsets no longer match what the user wrote).
    scan_references(piece, offset=offset, where=where)
