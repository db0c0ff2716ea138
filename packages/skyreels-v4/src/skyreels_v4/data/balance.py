"""Balancing of paper 3.4.2: concept and motion labels matched against target proportions (data).

Each kept clip gets a label: the value of ``label_column`` (e.g. ``motion_label`` from the motion
stage, ``category`` from the audio stage) or, with ``keywords``, the first concept whose keywords
occur in its caption (the SFT "category matching against captions"). Given ``targets`` (label ->
proportion, normalised), the largest balanced set is ``N = min_label count/target``; each label keeps
``floor(target·N)`` clips, chosen by a stable hash of the clip id, and the rest are dropped with
``over_target:<label>``. A target label without any clip makes ``N = 0``: nothing of the targeted
labels is kept (the proportions cannot be met), so name only labels that occur.

``match_category`` is the image-side alternative for the SFT balance (entity and scene categories):
a CLIP-style :class:`~skyreels_v4.data.hooks.TextImageMatcher` scores the clip's frames (or the
image) against one text prompt per category; the best category is written to ``column``, which
``balance`` then reads through ``label_column``.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skyreels_v4.data.manifest import Row
from skyreels_v4.data.stage import StageContext, StageKind, StageResult, drop_row, load_hook, register_stage
from skyreels_v4.errors import NonFiniteError, SkyReelsError

__all__ = ["BalanceConfig", "MatchCategoryConfig", "Unlabeled", "caption_label"]


class Unlabeled(enum.Enum):
    KEEP = "keep"
    DROP = "drop"


@dataclass(frozen=True, kw_only=True)
class BalanceConfig:
    targets: dict[str, float] = field(default_factory=dict)
    label_column: str | None = None
    keywords: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unlabeled: str = Unlabeled.KEEP.value

    def __post_init__(self) -> None:
        Unlabeled(self.unlabeled)
        if not self.targets or any(not (v > 0 and math.isfinite(v)) for v in self.targets.values()):
            raise ValueError(f"targets: expected label -> positive proportion, got {self.targets}")
        if (self.label_column is None) == (not self.keywords):
            raise ValueError("balance: expected exactly one of label_column and keywords")
        for label, words in self.keywords.items():
            if isinstance(words, str) or not words or not all(isinstance(w, str) and w for w in words):
                raise ValueError(f"keywords[{label!r}]: expected a list of non-empty words, got {words!r}")


def caption_label(caption: str, keywords: dict[str, tuple[str, ...]]) -> str | None:
    """The first concept (in ``keywords`` order) with a keyword found as a whole word in ``caption``."""
    text = caption.lower()
    for label, words in keywords.items():
        if any(re.search(rf"\b{re.escape(w.lower())}\b", text) for w in words):
            return label
    return None


def _stable(clip_id: str) -> str:
    return hashlib.sha256(clip_id.encode()).hexdigest()


@register_stage("balance", StageKind.TABLE, BalanceConfig)
def balance(rows: list[Row], config: BalanceConfig, context: StageContext) -> list[Row]:
    total = sum(config.targets.values())
    targets = {k: v / total for k, v in config.targets.items()}
    groups: dict[str, list[Row]] = {k: [] for k in targets}
    out: list[Row] = []
    if config.label_column is not None and rows and not any(config.label_column in r for r in rows):
        raise SkyReelsError(
            f"balance: label_column {config.label_column!r} is in no kept clip; expected a column written "
            f"by an earlier stage (motion_label by motion, category by audio_category, concept by "
            f"match_category), got columns {sorted(rows[0])}"
        )
    for row in rows:
        if config.label_column is not None:
            label = row.get(config.label_column)
            label = None if label is None else str(label)
        else:
            label = caption_label(
                str(row.get("caption", "")), {k: tuple(v) for k, v in config.keywords.items()}
            )
        row = {**row, "balance_label": label}
        if label in groups:
            groups[label].append(row)
        elif Unlabeled(config.unlabeled) is Unlabeled.KEEP:
            out.append(row)
        else:
            out.append(drop_row(row, "balance", f"unlabeled:{label}"))
    size = min(len(groups[k]) / targets[k] for k in targets)
    for label, group in groups.items():
        quota = math.floor(targets[label] * size + 1e-9)
        ranked = sorted(group, key=lambda r: _stable(r["id"]))
        out.extend(ranked[:quota])
        out.extend(drop_row(r, "balance", f"over_target:{label}") for r in ranked[quota:])
    return out


@dataclass(frozen=True, kw_only=True)
class MatchCategoryConfig:
    """``categories``: label -> the text prompt that describes it (``{"cat": "a photo of a cat"}``);
    ``matcher``: a TextImageMatcher hook (e.g. ``skyreels_v4.data.hf_hooks:CLIPEmbedder``); a clip
    whose best similarity is below ``min_similarity`` is dropped (``no_category``)."""

    categories: dict[str, str] = field(default_factory=dict)
    matcher: Any = None
    column: str = "concept"
    min_similarity: float = -1.0
    num_frames: int = 3

    def __post_init__(self) -> None:
        if not self.categories or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in self.categories.items()
        ):
            raise ValueError(f"categories: expected label -> non-empty prompt text, got {self.categories!r}")
        if self.matcher is None:
            raise ValueError("matcher: expected a TextImageMatcher hook {target: 'module:Class', kwargs}")
        if not math.isfinite(self.min_similarity):
            raise ValueError(f"min_similarity: expected a finite number, got {self.min_similarity!r}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames: expected >= 1, got {self.num_frames!r}")


def _clip_frames(row: Row, context: StageContext, num_frames: int) -> np.ndarray:
    from skyreels_v4.data.images import IMAGE_EXTENSIONS, read_image
    from skyreels_v4.data.media import read_frames

    path = context.source_path(row["source"])
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return read_image(path)[None]
    fps = float(row.get("fps") or 25.0)
    step = max(1, int((row["end_s"] - row["start_s"]) * fps) // num_frames)
    return read_frames(path, row["start_s"], row["end_s"], gray=False, step=step)[:num_frames]


@register_stage("match_category", StageKind.MAP, MatchCategoryConfig)
def match_category(row: Row, config: MatchCategoryConfig, context: StageContext) -> StageResult:
    """The category whose prompt is most similar to the clip (paper 3.4.2, SFT category matching)."""
    labels = list(config.categories)
    scores = np.asarray(
        load_hook(config.matcher).similarity(
            _clip_frames(row, context, config.num_frames), [config.categories[k] for k in labels]
        ),
        dtype=np.float64,
    )
    if scores.shape != (len(labels),):
        raise SkyReelsError(
            f"matcher {config.matcher!r}: expected {len(labels)} similarities, got shape {scores.shape}"
        )
    if not np.isfinite(scores).all():
        raise NonFiniteError(f"stage 'match_category': similarities of clip {row['id']!r} are {scores}")
    best = int(np.argmax(scores))
    values = {config.column: labels[best], f"{config.column}_similarity": float(scores[best])}
    if scores[best] < config.min_similarity:
        return StageResult(values=values, drop=f"no_category(similarity<{config.min_similarity:g})")
    return StageResult(values=values)
