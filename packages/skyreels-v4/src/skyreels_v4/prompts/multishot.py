"""Multi-shot prompts: several shots, each with its own structured caption and duration.

The paper's appendix A.1.1 describes a four-shot scene in one instruction (one ``<bgm>`` spans
"the first two shots ... the last two shots"). This module gives such prompts explicit markup::

    Two people talk at a wooden table. <bgm>Soft, sorrowful music.</bgm>
    [shot 1: 2.5s] The camera focuses on @Actor-0, who says <dialogue>I'm tired.</dialogue>
    [shot 2: 2s] @Actor-1 answers <dialogue>I will visit tomorrow.</dialogue>

* A shot header ``[shot K: S s]`` (``s`` optional, case-insensitive ``shot``) starts a line;
  ``K`` counts 1, 2, 3, ... in order and ``S`` is a finite duration in seconds > 0.
* The shot's caption is the text after its header up to the next header (it may span lines).
* Text before the first header is the *common* caption, shared by every shot (may be empty).
* ``[shot`` anywhere else is an error (a header that does not start a line).

Shot ``k`` spans ``[sum of earlier durations, + its own)`` seconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from skyreels_v4.errors import PromptError
from skyreels_v4.prompts.caption import (
    DEFAULT_MAX_PROMPT_CHARS,
    StructuredCaption,
    check_prompt_text,
    parse_prompt,
)
from skyreels_v4.prompts.references import Reference

__all__ = ["MultiShotPrompt", "Shot", "has_shot_markup", "parse_multishot"]

#: Default absolute tolerance (seconds) when comparing the shots' total with a requested duration.
DURATION_TOLERANCE_S = 1e-6

_HEADER_START = re.compile(r"\[\s*shot\b", re.IGNORECASE)
_HEADER = re.compile(r"\[\s*shot\s+([^:\]]*?)\s*:\s*([^\]]*?)\s*\]", re.IGNORECASE)
_SECONDS = re.compile(r"(.*?)\s*s?", re.IGNORECASE | re.DOTALL)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _check_seconds(seconds: object, what: str) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise PromptError(f"{what}: expected a duration in seconds (a number), got {seconds!r}")
    value = float(seconds)
    if not math.isfinite(value) or value <= 0:
        raise PromptError(f"{what}: expected a finite duration > 0 seconds, got {seconds!r}")
    return value


@dataclass(frozen=True)
class Shot:
    """One shot: its caption and duration in seconds.

    ``caption`` may be given as text; it is then parsed with :func:`parse_prompt`.
    """

    caption: StructuredCaption
    seconds: float

    def __post_init__(self) -> None:
        if isinstance(self.caption, str):
            object.__setattr__(self, "caption", parse_prompt(self.caption, where="Shot.caption"))
        elif not isinstance(self.caption, StructuredCaption):
            got = type(self.caption).__name__
            raise TypeError(f"Shot.caption: expected str or StructuredCaption, got {got}")
        elif not self.caption.segments:
            raise PromptError("Shot.caption: expected a description, got an empty caption")
        object.__setattr__(self, "seconds", _check_seconds(self.seconds, "Shot.seconds"))


@dataclass(frozen=True)
class MultiShotPrompt:
    """Shots in order, plus an optional caption common to all of them.

    Attributes:
        shots: at least one :class:`Shot`.
        common: caption shared by every shot (may be empty: ``StructuredCaption(())``).
    """

    shots: tuple[Shot, ...]
    common: StructuredCaption = field(default_factory=lambda: StructuredCaption(()))

    def __post_init__(self) -> None:
        shots = tuple(self.shots)
        if not shots:
            raise PromptError("MultiShotPrompt.shots: expected at least one shot, got none")
        for k, shot in enumerate(shots, start=1):
            if not isinstance(shot, Shot):
                got = type(shot).__name__
                raise TypeError(f"MultiShotPrompt.shots: shot {k}: expected a Shot, got {got}")
        if isinstance(self.common, str):
            object.__setattr__(self, "common", parse_prompt(self.common, allow_empty=True, where="common"))
        elif not isinstance(self.common, StructuredCaption):
            got = type(self.common).__name__
            raise TypeError(f"MultiShotPrompt.common: expected str or StructuredCaption, got {got}")
        object.__setattr__(self, "shots", shots)

    @property
    def duration(self) -> float:
        """Total duration in seconds."""
        return math.fsum(shot.seconds for shot in self.shots)

    @property
    def spans(self) -> tuple[tuple[float, float], ...]:
        """``(start, end)`` seconds of each shot."""
        spans, start = [], 0.0
        for k in range(len(self.shots)):
            end = math.fsum(shot.seconds for shot in self.shots[: k + 1])
            spans.append((start, end))
            start = end
        return tuple(spans)

    @property
    def references(self) -> tuple[Reference, ...]:
        """All references, common caption first, then shot by shot (repeats included)."""
        found = list(self.common.references)
        for shot in self.shots:
            found += shot.caption.references
        return tuple(found)

    def check_duration(self, seconds: float, *, tolerance: float = DURATION_TOLERANCE_S) -> None:
        """Raise :class:`PromptError` unless the shots add up to ``seconds`` (within ``tolerance``)."""
        requested = _check_seconds(seconds, "duration")
        total = self.duration
        if abs(total - requested) > tolerance:
            parts = " + ".join(f"shot {k}: {shot.seconds!r}" for k, shot in enumerate(self.shots, start=1))
            raise PromptError(
                f"duration: the shots add up to {total!r} s ({parts}), expected the requested {requested!r} s"
            )

    def render(self) -> str:
        """Canonical markup: the common caption on its own line (if any), then one line per shot."""
        lines = [self.common.render()] if self.common.segments else []
        for k, shot in enumerate(self.shots, start=1):
            lines.append(f"[shot {k}: {shot.seconds!r}s] {shot.caption.render()}")
        return "\n".join(lines)


def has_shot_markup(text: str) -> bool:
    """Whether ``text`` contains a shot header (``[shot``), i.e. should go to :func:`parse_multishot`."""
    return _HEADER_START.search(text) is not None


def parse_multishot(
    text: str,
    *,
    duration: float | None = None,
    tolerance: float = DURATION_TOLERANCE_S,
    max_chars: int = DEFAULT_MAX_PROMPT_CHARS,
) -> MultiShotPrompt:
    """Parse multi-shot markup (module docstring).

    Args:
        text: the prompt.
        duration: if given, the shots must add up to it (seconds, within ``tolerance``).
        max_chars: longest accepted prompt (the whole text).

    Raises:
        PromptError: no shot header, a malformed header, shots numbered out of order, a duration
            that is not a finite number > 0, an empty shot caption, a header that does not start a
            line, a sum that differs from ``duration``, or any caption error (:func:`parse_prompt`),
            each naming the shot (or ``common``) and the character offset.
    """
    check_prompt_text(text, max_chars=max_chars)
    headers = []
    for start in _HEADER_START.finditer(text):
        at = start.start()
        line_start = text.rfind("\n", 0, at) + 1
        if text[line_start:at].strip():
            raise PromptError(
                f"prompt at character {at}: shot header {text[at : at + 20]!r} must start a line"
            )
        header = _HEADER.match(text, at)
        if header is None:
            raise PromptError(
                f"prompt at character {at}: malformed shot header {text[at : at + 20]!r}; "
                "expected '[shot K: S s]', e.g. '[shot 1: 2.5s]'"
            )
        headers.append(header)
    if not headers:
        raise PromptError("prompt: expected at least one shot header '[shot K: S s]', found none")

    shots = []
    for k, header in enumerate(headers, start=1):
        number, seconds_text = header.group(1), header.group(2)
        where = f"shot {k} (character {header.start()})"
        if number != str(k):
            raise PromptError(
                f"{where}: expected the header to say 'shot {k}' (shots count 1, 2, ...), got {number!r}"
            )
        seconds_number = _SECONDS.fullmatch(seconds_text).group(1)  # type: ignore[union-attr]
        if _NUMBER.fullmatch(seconds_number) is None:
            raise PromptError(f"{where}: duration {seconds_text!r} is not a number (expected e.g. '2.5s')")
        seconds = _check_seconds(float(seconds_number), f"{where}: duration")
        end = headers[k].start() if k < len(headers) else len(text)
        body = text[header.end() : end]
        try:
            caption = parse_prompt(body, max_chars=max_chars, where=f"shot {k}")
        except PromptError as error:
            raise PromptError(f"{error} (shot {k}'s text starts at character {header.end()})") from error
        shots.append(Shot(caption, seconds))
    common = parse_prompt(text[: headers[0].start()], max_chars=max_chars, allow_empty=True, where="common")
    prompt = MultiShotPrompt(tuple(shots), common)
    if duration is not None:
        prompt.check_duration(duration, tolerance=tolerance)
    return prompt
