"""Reference tokens in a prompt: ``@image_N``, ``@video_N``, ``@audio_N`` (paper 3.3 and appendix A).

Paper section 3.3 names reference inputs inside the prompt ("person A from the reference @image_1
speaking ... in the style of person B's @video_1"); the appendix (A.1.1) spells reference images
and audio ``@Actor-N`` / ``@Audio-N`` and numbers them from 0. This module reads both spellings
into one :class:`Reference` value:

========================  =====================  ==================================
spelling                  meaning                canonical form
========================  =====================  ==================================
``@image_N`` (N >= 1)     N-th supplied image    ``@image_N``
``@video_N`` (N >= 1)     N-th supplied video    ``@video_N``
``@audio_N`` (N >= 1)     N-th supplied audio    ``@audio_N``
``@Actor-N`` (N >= 0)     image N+1              ``@image_{N+1}``
``@Audio-N`` (N >= 0)     audio N+1              ``@audio_{N+1}``
========================  =====================  ==================================

An ``@`` directly after a letter or digit (``name@example.com``) or before a non-letter
(``meet @ noon``) is plain text; every other ``@word`` must be one of the spellings above, so a typo
such as ``@imgae_1`` is an error rather than silently ignored text.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from skyreels_v4.errors import PromptError

__all__ = ["Reference", "ReferenceKind", "scan_references"]


class ReferenceKind(enum.Enum):
    """What a reference points at; the value is the word used in ``@<kind>_N``."""

    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"


@dataclass(frozen=True)
class Reference:
    """One reference as written in a prompt.

    Attributes:
        kind: image, video or audio.
        index: 1-based position in the sequence of that kind the caller supplies.
        spelling: the token as written (``"@image_1"``, ``"@Actor-0"``), kept so that rendering
            reproduces the prompt and errors quote what the user typed.
    """

    kind: ReferenceKind
    index: int
    spelling: str

    @property
    def canonical(self) -> str:
        """``@<kind>_<index>`` whatever the spelling (``@Actor-0`` -> ``@image_1``)."""
        return f"@{self.kind.value}_{self.index}"

    def describe(self) -> str:
        """The spelling, with its canonical form when they differ: ``@Actor-1 (= @image_2)``."""
        if self.spelling == self.canonical:
            return self.spelling
        return f"{self.spelling} (= {self.canonical})"


# An @-token: "@" not preceded by a word character, followed by a letter and word-ish characters.
_TOKEN = re.compile(r"(?<![0-9A-Za-z_])@([A-Za-z][0-9A-Za-z_-]*)")
_CANONICAL = re.compile(r"(image|video|audio)_([1-9][0-9]*)")
_ALIAS = re.compile(r"(Actor|Audio)-(0|[1-9][0-9]*)")
_ALIAS_KIND = {"Actor": ReferenceKind.IMAGE, "Audio": ReferenceKind.AUDIO}
# Upper bound on N: far above any real use, and keeps int() away from absurd digit strings.
_MAX_INDEX = 10_000


def _where(offset: int, where: str) -> str:
    return f"{where} at character {offset}" if where else f"at character {offset}"


def scan_references(text: str, *, offset: int = 0, where: str = "prompt") -> list[Reference]:
    """The references in ``text``, in order of appearance (repeats included).

    Args:
        text: prompt text (one segment or a whole prompt).
        offset: character offset of ``text`` in the prompt, so errors point into the prompt.
        where: what ``text`` is, for error messages (``"prompt"``, ``"shot 2"``).

    Raises:
        PromptError: an ``@word`` that is not a valid reference (unknown kind, index 0 or with a
            leading zero, trailing characters), naming the token and its character offset.
    """
    found = []
    for match in _TOKEN.finditer(text):
        word = match.group(1)
        at = offset + match.start()
        canonical = _CANONICAL.fullmatch(word)
        alias = _ALIAS.fullmatch(word)
        if canonical is not None:
            kind, number = ReferenceKind(canonical.group(1)), canonical.group(2)
            index = int(number) if len(number) <= 5 else _MAX_INDEX + 1
        elif alias is not None:
            kind, number = _ALIAS_KIND[alias.group(1)], alias.group(2)
            index = int(number) + 1 if len(number) <= 5 else _MAX_INDEX + 1
        else:
            raise PromptError(
                f"{_where(at, where)}: '@{word}' is not a reference; expected @image_N, @video_N or "
                "@audio_N with N >= 1 (no leading zero), or the aliases @Actor-N / @Audio-N with N >= 0"
            )
        if index > _MAX_INDEX:
            raise PromptError(f"{_where(at, where)}: '@{word}': index expected <= {_MAX_INDEX}")
        found.append(Reference(kind=kind, index=index, spelling="@" + word))
    return found
