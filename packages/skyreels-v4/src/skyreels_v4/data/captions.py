"""Captions of paper 3.4.3: short, long and structured captions from hooks, audio and video
descriptions merged into one structured caption, and a validator.

A structured caption is the visual description followed by tagged parts in a fixed order:
``<text>`` (in-video text), ``<sfx>``, ``<dialogue>``, ``<singing>``, ``<bgm>``. Tags do not nest,
each appears at most once and none is empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from skyreels_v4.data.manifest import Row
from skyreels_v4.data.stage import StageContext, StageKind, StageResult, load_hook, register_stage

__all__ = ["STRUCTURED_TAGS", "CaptionConfig", "merge_structured_caption", "validate_structured_caption"]

STRUCTURED_TAGS = ("text", "sfx", "dialogue", "singing", "bgm")
_TAG = re.compile(r"<(/?)([a-z_]+)>")


def merge_structured_caption(visual: str, parts: dict[str, str]) -> str:
    """``visual`` plus each non-empty part of ``parts`` in its tag, in the order of 3.4.3."""
    unknown = sorted(set(parts) - set(STRUCTURED_TAGS))
    if unknown:
        raise ValueError(f"parts: expected keys among {STRUCTURED_TAGS}, got {unknown}")
    pieces = [visual.strip()] if visual.strip() else []
    pieces += [
        f"<{tag}>{parts[tag].strip()}</{tag}>" for tag in STRUCTURED_TAGS if parts.get(tag, "").strip()
    ]
    return " ".join(pieces)


def validate_structured_caption(caption: str, *, min_words: int = 3, max_words: int = 400) -> list[str]:
    """Problems of ``caption`` (empty list: valid)."""
    problems = []
    words = len(_TAG.sub(" ", caption).split())
    if words < min_words:
        problems.append(f"too short ({words} words < {min_words})")
    if words > max_words:
        problems.append(f"too long ({words} words > {max_words})")
    open_tag: str | None = None
    seen: list[str] = []
    for match in _TAG.finditer(caption):
        closing, tag = match.group(1) == "/", match.group(2)
        if tag not in STRUCTURED_TAGS:
            problems.append(f"unknown tag <{tag}>")
            continue
        if not closing:
            if open_tag is not None:
                problems.append(f"<{tag}> inside <{open_tag}>")
            if tag in seen:
                problems.append(f"<{tag}> appears twice")
            open_tag = tag
            seen.append(tag)
            start = match.end()
        else:
            if open_tag != tag:
                problems.append(f"</{tag}> without <{tag}>")
            elif not caption[start : match.start()].strip():
                problems.append(f"empty <{tag}>")
            open_tag = None
    if open_tag is not None:
        problems.append(f"<{open_tag}> is not closed")
    order = [t for t in STRUCTURED_TAGS if t in seen]
    if seen and order != [t for t in seen if t in STRUCTURED_TAGS]:
        problems.append(f"tags out of order: {seen} (expected the order {STRUCTURED_TAGS})")
    return problems


@dataclass(frozen=True, kw_only=True)
class CaptionConfig:
    """Hooks (default: :class:`~skyreels_v4.data.hooks.SidecarCaptioner` for both) and the validator's limits.

    The structured caption is the video captioner's ``visual`` text (or its ``long``, then ``short``)
    plus the audio parts; a ``transcript`` measured earlier fills ``<dialogue>`` (speech) or
    ``<singing>`` when the audio captioner gave none.
    """

    video_captioner: Any = "skyreels_v4.data.hooks:SidecarCaptioner"
    audio_captioner: Any = "skyreels_v4.data.hooks:SidecarCaptioner"
    min_words: int = 3
    max_words: int = 400


@register_stage("caption", StageKind.MAP, CaptionConfig)
def caption(row: Row, config: CaptionConfig, context: StageContext) -> StageResult:
    path = context.source_path(row["source"])
    video = load_hook(config.video_captioner).describe_video(path, row["start_s"], row["end_s"])
    audio = load_hook(config.audio_captioner).describe_audio(path, row["start_s"], row["end_s"])
    for name, hook, described in (
        ("video_captioner", config.video_captioner, video),
        ("audio_captioner", config.audio_captioner, audio),
    ):
        if not isinstance(described, dict) or not all(isinstance(v, str) for v in described.values()):
            raise TypeError(
                f"{name} {hook!r}: expected a dict of strings for clip {row['id']!r}, got {described!r}"
            )
    parts = {k: v for k, v in audio.items() if k in STRUCTURED_TAGS}
    if video.get("text"):
        parts["text"] = video["text"]
    transcript = row.get("transcript")
    if transcript:
        key = "singing" if row.get("category") == "singing" else "dialogue"
        parts.setdefault(key, transcript)
    visual = video.get("visual") or video.get("long") or video.get("short") or ""
    structured = merge_structured_caption(visual, parts)
    values = {
        "caption_short": video.get("short", visual),
        "caption_long": video.get("long", visual),
        "caption": structured,
    }
    problems = validate_structured_caption(structured, min_words=config.min_words, max_words=config.max_words)
    return StageResult(values=values, drop=f"caption_invalid: {problems[0]}" if problems else None)
