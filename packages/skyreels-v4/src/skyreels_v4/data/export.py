"""Export the kept clips for the training cache: ``<output>/export/captions.jsonl`` (one JSON
object per line: ``id``, ``video`` (mp4 path relative to the export folder), ``caption``,
``start_s``, ``end_s``, optional ``audio``) and, with ``mode: cut``, each clip cut to its span.

``mode: reference`` writes no media: ``video`` points at the source file (relative path) and
``start_s``/``end_s`` give the span; ``mode: cut`` re-encodes the span into ``clips/<id>.mp4``
(frame-exact; span 0..duration in the captions file).

The file is exactly what :func:`skyreels_v4.training.cache.folder_samples` reads (its ``folder`` is
``<output>/export``): the cache takes each clip's audio from its mp4, so a clip without an audio
stream cannot be cached. ``silent: skip`` (default) leaves such clips out of ``captions.jsonl``
(the row stays kept and gets ``export_skipped: no_audio``); ``silent: silence`` (cut mode only)
writes a silent track at ``silence_rate`` into the cut clip, for training on silent footage.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass

from skyreels_v4.data.manifest import Row
from skyreels_v4.data.media import cut_clip
from skyreels_v4.data.stage import StageContext, StageKind, StageResult, register_stage
from skyreels_v4.io import atomic_write_text

__all__ = ["CAPTIONS_NAME", "ExportConfig", "ExportMode", "SilentClips", "read_captions"]

CAPTIONS_NAME = "captions.jsonl"


class ExportMode(enum.Enum):
    CUT = "cut"
    REFERENCE = "reference"


class SilentClips(enum.Enum):
    SKIP = "skip"
    SILENCE = "silence"


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    mode: str = ExportMode.CUT.value
    folder: str = "export"
    silent: str = SilentClips.SKIP.value
    silence_rate: int = 16000

    def __post_init__(self) -> None:
        for name, kind in (("mode", ExportMode), ("silent", SilentClips)):
            try:
                kind(getattr(self, name))
            except ValueError as error:
                raise ValueError(
                    f"{name}: expected one of {[k.value for k in kind]}, got {getattr(self, name)!r}"
                ) from error
        if ExportMode(self.mode) is ExportMode.REFERENCE and SilentClips(self.silent) is SilentClips.SILENCE:
            raise ValueError(
                "silent: 'silence' writes audio into cut clips; with mode 'reference' use 'skip'"
            )
        if (
            isinstance(self.silence_rate, bool)
            or not isinstance(self.silence_rate, int)
            or self.silence_rate < 1
        ):
            raise ValueError(f"silence_rate: expected a positive int (Hz), got {self.silence_rate!r}")
        if not self.folder or self.folder.startswith(("/", "..")):
            raise ValueError(f"folder: expected a relative folder inside --output, got {self.folder!r}")


def _silent(row: Row) -> bool:
    return row.get("has_audio") is False


@register_stage("cut_clips", StageKind.MAP, ExportConfig)
def cut_clips(row: Row, config: ExportConfig, context: StageContext) -> StageResult:
    """``mode: cut``: write ``<folder>/clips/<id>.mp4``; ``reference``: nothing to write."""
    skip = _silent(row) and SilentClips(config.silent) is SilentClips.SKIP
    if skip:
        return StageResult(values={"export_skipped": "no_audio"})
    if ExportMode(config.mode) is ExportMode.REFERENCE:
        return StageResult()
    name = f"clips/{row['id'].replace('/', '__')}.mp4"
    cut_clip(
        context.source_path(row["source"]),
        context.output_dir / config.folder / name,
        row["start_s"],
        row["end_s"],
        silence_rate=config.silence_rate if _silent(row) else None,
    )
    return StageResult(values={"export_video": name})


@register_stage("write_captions", StageKind.TABLE, ExportConfig)
def write_captions(rows: list[Row], config: ExportConfig, context: StageContext) -> list[Row]:
    """Write ``captions.jsonl`` for every kept row that has a caption (rows pass through)."""
    folder = context.output_dir / config.folder
    lines = []
    for row in sorted(rows, key=lambda r: r["id"]):
        if not row.get("caption") or (_silent(row) and SilentClips(config.silent) is SilentClips.SKIP):
            continue
        if ExportMode(config.mode) is ExportMode.CUT:
            if "export_video" not in row:
                raise ValueError(f"write_captions: clip {row['id']!r} was not cut; run cut_clips first")
            entry = {
                "id": row["id"],
                "video": row["export_video"],
                "caption": row["caption"],
                "start_s": 0.0,
                "end_s": round(row["end_s"] - row["start_s"], 6),
            }
        else:
            source = os.path.relpath(context.source_path(row["source"]), folder)
            entry = {
                "id": row["id"],
                "video": source,
                "caption": row["caption"],
                "start_s": row["start_s"],
                "end_s": row["end_s"],
            }
        lines.append(json.dumps(entry, ensure_ascii=False))
    atomic_write_text(folder / CAPTIONS_NAME, "".join(line + "\n" for line in lines))
    return rows


def read_captions(folder: str | os.PathLike[str]) -> list[dict]:
    """Entries of ``<folder>/captions.jsonl``; malformed lines raise ``FileFormatError`` naming the line."""
    from pathlib import Path

    from skyreels_v4.errors import FileFormatError

    path = Path(folder) / CAPTIONS_NAME
    if not path.is_file():
        raise FileFormatError(path, "expected a captions.jsonl, but it is missing")
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise FileFormatError(path, f"line {n}: not JSON ({error.msg})") from error
        missing = {"id", "video", "caption", "start_s", "end_s"} - set(entry)
        if missing:
            raise FileFormatError(path, f"line {n}: missing keys {sorted(missing)}")
        entries.append(entry)
    return entries
