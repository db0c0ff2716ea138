"""Balancing of paper 3.4.2: concept and motion labels matched against target proportions (data).

Each kept clip gets a label: the value of ``label_column`` (e.g. ``motion_label`` from the motion
stage, ``category`` from the audio stage) or, with ``keywords``, the first concept whose keywords
occur in its caption (the SFT "category matching against captions"). Given ``targets`` (label ->
proportion, normalised), the largest balanced set is ``N = min_label count/target``; each label keeps
``floor(target·N)`` clips, chosen by a stable hash of the clip id, and the rest are dropped with
``over_target:<label>``.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from dataclasses import dataclass, field

from skyreels_v4.data.manifest import Row
from skyreels_v4.data.stage import StageContext, StageKind, drop_row, register_stage

__all__ = ["BalanceConfig", "Unlabeled", "caption_label"]


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
    for row in rows:
        if config.label_column is not None:
            label = row.get(config.label_column)
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
