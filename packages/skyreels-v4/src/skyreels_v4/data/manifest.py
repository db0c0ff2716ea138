"""The clip manifest of the data pipeline (paper 3.4): one row per clip, stored as Parquet.

Every row has the fixed columns of :data:`FIXED_COLUMNS`; each stage adds its measured values as
further columns (floats, ints, strings or booleans). A row that a stage has finished carries the
stage's key ``"<stage name>@<config digest>"`` in ``done``: re-running the same stage with the same
parameters skips it, changing a parameter gives a new digest and redoes the work.

Columns:
    id: unique clip id (``<source stem>`` for a scanned file, ``<parent>/s003`` for a segment).
    source: path of the media file, relative to the pipeline's input folder (posix separators).
    start_s, end_s: the clip's span inside ``source`` in seconds.
    kept: False once a stage dropped the clip; ``drop_reason`` says why (``"blur<40"``) and
        ``dropped_by`` which stage decided. Dropped rows are never processed again.
    done: the stage keys this row has passed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from skyreels_v4.errors import FileFormatError, NonFiniteError
from skyreels_v4.io import atomic_path

__all__ = [
    "FIXED_COLUMNS",
    "MANIFEST_NAME",
    "Row",
    "new_row",
    "read_manifest",
    "stage_key",
    "validate_values",
    "write_manifest",
]

MANIFEST_NAME = "manifest.parquet"
FIXED_COLUMNS = ("id", "source", "start_s", "end_s", "kept", "drop_reason", "dropped_by", "done")
Row = dict[str, Any]

_FIXED_TYPES = {
    "id": pa.string(),
    "source": pa.string(),
    "start_s": pa.float64(),
    "end_s": pa.float64(),
    "kept": pa.bool_(),
    "drop_reason": pa.string(),
    "dropped_by": pa.string(),
    "done": pa.list_(pa.string()),
}


def new_row(*, id: str, source: str, start_s: float, end_s: float, **values: Any) -> Row:
    """A fresh, kept row; ``values`` become measured columns."""
    row: Row = {
        "id": id,
        "source": source,
        "start_s": float(start_s),
        "end_s": float(end_s),
        "kept": True,
        "drop_reason": None,
        "dropped_by": None,
        "done": [],
    }
    row.update(values)
    return row


def stage_key(name: str, config: Any) -> str:
    """``"<name>@<12 hex digits>"``: the digest covers the stage name and every parameter."""
    params = asdict(config) if is_dataclass(config) else dict(config or {})
    text = json.dumps({"stage": name, "params": params}, sort_keys=True, default=str)
    return f"{name}@{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def validate_values(values: Mapping[str, Any], *, stage: str, clip_id: str) -> None:
    """Refuse NaN/inf and names that would overwrite the fixed columns."""
    for key, value in values.items():
        if key in FIXED_COLUMNS:
            raise ValueError(
                f"stage {stage!r}: value {key!r} of clip {clip_id!r} would overwrite a fixed column"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise NonFiniteError(f"stage {stage!r}: value {key!r} of clip {clip_id!r} is {value}")


def _column_type(name: str, values: list[Any]) -> pa.DataType:
    if name in _FIXED_TYPES:
        return _FIXED_TYPES[name]
    present = [v for v in values if v is not None]
    if not present:
        return pa.null()
    if all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.float64()
    if all(isinstance(v, str) for v in present):
        return pa.string()
    kinds = sorted({type(v).__name__ for v in present})
    raise TypeError(f"manifest column {name!r}: expected one scalar type per column, got {kinds}")


def rows_to_table(rows: Iterable[Row]) -> pa.Table:
    """Rows (any order) -> a table sorted by id with typed columns (fixed columns first)."""
    rows = sorted(rows, key=lambda r: r["id"])
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"manifest: clip ids must be unique, got duplicates {duplicates}")
    names = list(FIXED_COLUMNS) + sorted({k for r in rows for k in r} - set(FIXED_COLUMNS))
    arrays = []
    for name in names:
        column = [r.get(name) for r in rows]
        kind = _column_type(name, column)
        if kind == pa.float64():
            column = [None if v is None else float(v) for v in column]
        arrays.append(pa.array(column, type=kind))
    return pa.Table.from_arrays(arrays, names=names)


def write_manifest(path: str | os.PathLike[str], rows: Iterable[Row]) -> Path:
    """Write the rows as Parquet atomically (a reader never sees half a manifest)."""
    table = rows_to_table(rows)
    with atomic_path(path, ".parquet") as temp:
        pq.write_table(table, temp)
    return Path(path)


def read_manifest(path: str | os.PathLike[str]) -> list[Row]:
    """Rows of a manifest written by :func:`write_manifest`; a bad file raises ``FileFormatError``."""
    target = Path(path)
    if not target.is_file():
        raise FileFormatError(target, "expected a manifest (Parquet), but it is missing")
    try:
        table = pq.read_table(target)
    except (OSError, pa.ArrowException) as error:
        raise FileFormatError(target, f"not a readable Parquet manifest ({error})") from error
    missing = [c for c in FIXED_COLUMNS if c not in table.column_names]
    if missing:
        raise FileFormatError(
            target, f"expected the manifest columns {list(FIXED_COLUMNS)}, missing {missing}"
        )
    rows = table.to_pylist()
    for row in rows:
        for key in [k for k, v in row.items() if v is None and k not in FIXED_COLUMNS]:
            del row[key]  # absent measured values come back as nulls; keep rows sparse
        row["done"] = list(row["done"] or [])
    return rows
