"""``skyreels-v4 data report --output DIR``: counts kept / dropped per reason and stage, and a PNG
histogram of every measured numeric column (kept and dropped clips stacked), under ``DIR/report``."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from skyreels_v4.data.manifest import FIXED_COLUMNS, MANIFEST_NAME, Row, read_manifest
from skyreels_v4.io import atomic_path, atomic_write_json, atomic_write_text

__all__ = ["summarize", "write_report"]


def summarize(rows: list[Row]) -> dict:
    """``{"clips", "kept", "dropped": {"stage: reason": count}}`` (reasons without their threshold digits
    are not merged: each distinct reason string is its own line)."""
    dropped = Counter(f"{r['dropped_by']}: {r['drop_reason']}" for r in rows if not r["kept"])
    return {
        "clips": len(rows),
        "kept": sum(r["kept"] for r in rows),
        "dropped": dict(sorted(dropped.items())),
    }


def _numeric_columns(rows: list[Row]) -> list[str]:
    names = sorted({k for r in rows for k in r} - set(FIXED_COLUMNS))
    return [
        n
        for n in names
        if any(isinstance(r.get(n), (int, float)) and not isinstance(r.get(n), bool) for r in rows)
    ]


def write_report(output_dir: str | os.PathLike[str]) -> Path:
    """Write ``report/summary.json``, ``report/summary.md`` and ``report/<column>.png``; return the folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_manifest(Path(output_dir) / MANIFEST_NAME)
    folder = Path(output_dir) / "report"
    summary = summarize(rows)
    atomic_write_json(folder / "summary.json", summary)
    lines = [
        f"# Data pipeline report\n\n{summary['clips']} clips, {summary['kept']} kept.\n",
        "| dropped by: reason | clips |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v} |" for k, v in summary["dropped"].items()]
    for column in _numeric_columns(rows):
        kept = [float(r[column]) for r in rows if r["kept"] and isinstance(r.get(column), (int, float))]
        gone = [float(r[column]) for r in rows if not r["kept"] and isinstance(r.get(column), (int, float))]
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.hist(
            [kept, gone], bins=20, stacked=True, label=["kept", "dropped"], color=["tab:green", "tab:red"]
        )
        ax.set_xlabel(column)
        ax.set_ylabel("clips")
        ax.legend()
        fig.tight_layout()
        with atomic_path(folder / f"{column}.png", ".png") as temp:
            fig.savefig(temp, dpi=90, format="png")
        plt.close(fig)
        lines.append(f"\n![{column}]({column}.png)")
    atomic_write_text(folder / "summary.md", "\n".join(lines) + "\n")
    return folder
