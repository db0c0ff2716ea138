"""Run a pipeline YAML over a folder: the same stages locally (process pool) or on Ray Data.

A pipeline file::

    name: video-av
    checkpoint_every: 16          # rows between manifest checkpoints
    stages:
      - stage: scan_videos
        params: {extensions: [.mp4]}
      - stage: shots
      - stage: video_quality
        params: {min_short_side: 64}

The manifest lives at ``<output>/manifest.parquet`` and is rewritten atomically after every
``checkpoint_every`` rows, so a run killed half way resumes where it stopped: rows that already
carry a stage's key are not processed again (:mod:`skyreels_v4.data.manifest`).
"""

from __future__ import annotations

import enum
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from skyreels_v4.data.manifest import (
    MANIFEST_NAME,
    Row,
    read_manifest,
    stage_key,
    validate_values,
    write_manifest,
)
from skyreels_v4.data.stage import (
    Drop,
    Stage,
    StageContext,
    StageKind,
    StageResult,
    build_config,
    resolve_stage,
)
from skyreels_v4.errors import FileFormatError, SkyReelsError

__all__ = ["Engine", "Pipeline", "PipelineStage", "load_pipeline", "run_pipeline"]


class Engine(enum.Enum):
    LOCAL = "local"
    RAY = "ray"


@dataclass(frozen=True, kw_only=True)
class PipelineStage:
    ref: str  # built-in name or "module:function"
    config: Any
    key: str


@dataclass(frozen=True, kw_only=True)
class Pipeline:
    name: str
    stages: tuple[PipelineStage, ...]
    checkpoint_every: int = 16


def load_pipeline(path: str | os.PathLike[str]) -> Pipeline:
    """Parse and check a pipeline YAML: every stage resolves and its params fit its config."""
    target = Path(path)
    if not target.is_file():
        raise FileFormatError(target, "expected a pipeline YAML, but it is missing")
    try:
        data = yaml.safe_load(target.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise FileFormatError(target, f"not valid YAML ({error})") from error
    if not isinstance(data, dict) or not isinstance(data.get("stages"), list) or not data["stages"]:
        raise FileFormatError(target, "expected a mapping with a non-empty 'stages' list")
    unknown = sorted(set(data) - {"name", "stages", "checkpoint_every"})
    if unknown:
        raise FileFormatError(
            target, f"unknown top-level key(s) {unknown}; expected name, stages, checkpoint_every"
        )
    stages = []
    for n, entry in enumerate(data["stages"]):
        if not isinstance(entry, dict) or "stage" not in entry or set(entry) - {"stage", "params"}:
            raise FileFormatError(
                target, f"stages[{n}]: expected {{stage: NAME, params: {{...}}}}, got {entry!r}"
            )
        try:
            stage = resolve_stage(str(entry["stage"]))
            config = build_config(stage, entry.get("params"))
        except SkyReelsError as error:
            raise FileFormatError(target, f"stages[{n}]: {error}") from error
        stages.append(
            PipelineStage(ref=str(entry["stage"]), config=config, key=stage_key(stage.name, config))
        )
    if resolve_stage(stages[0].ref).kind is not StageKind.SOURCE:
        raise FileFormatError(target, "stages[0]: expected a source stage (e.g. scan_videos) first")
    every = data.get("checkpoint_every", 16)
    if not isinstance(every, int) or every < 1:
        raise FileFormatError(target, f"checkpoint_every: expected a positive integer, got {every!r}")
    return Pipeline(name=str(data.get("name", target.stem)), stages=tuple(stages), checkpoint_every=every)


# ---- one row through one stage (runs in workers: top-level and picklable) ----------------------


def _apply_row(ref: str, config: Any, key: str, context: StageContext, row: Row) -> list[Row]:
    """Run a MAP or EXPAND stage on ``row``; return the row(s) that replace it, marked done."""
    stage = resolve_stage(ref)
    try:
        if stage.kind is StageKind.MAP:
            result = stage.fn(row, config, context)
            if not isinstance(result, StageResult):
                raise TypeError(f"stage {stage.name!r}: expected a StageResult, got {type(result).__name__}")
            out = [_updated(row, stage.name, result.values, result.drop)]
        else:
            children = list(stage.fn(row, config, context))
            out = []
            for child in children:
                validate_values(
                    {k: v for k, v in child.items() if k not in _CHILD_FIELDS},
                    stage=stage.name,
                    clip_id=row["id"],
                )
                merged = {**row, **child, "done": list(row["done"])}
                out.append(merged)
    except Drop as drop:
        out = [_updated(row, stage.name, drop.values, drop.reason)]
    for item in out:
        item["done"] = [*item["done"], key]
    return out


_CHILD_FIELDS = ("id", "source", "start_s", "end_s")


def _updated(row: Row, stage: str, values: dict[str, Any], drop: str | None) -> Row:
    validate_values(values, stage=stage, clip_id=row["id"])
    new = {**row, **values, "done": list(row["done"])}
    if drop is not None:
        new.update(kept=False, drop_reason=drop, dropped_by=stage)
    return new


def _apply_chunk(ref: str, config: Any, key: str, context: StageContext, rows: list[Row]) -> list[list[Row]]:
    return [_apply_row(ref, config, key, context, row) for row in rows]


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one clip per core: intra-op threads would only oversubscribe


# ---- engines: map a chunk of rows --------------------------------------------------------------


class _LocalEngine:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None

    def map(self, step: PipelineStage, context: StageContext, rows: list[Row]) -> Iterator[list[Row]]:
        if self.workers == 0:
            for row in rows:
                yield _apply_row(step.ref, step.config, step.key, context, row)
            return
        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
            )
        args = [[row] for row in rows]
        n = len(rows)
        yield from (
            chunk[0]
            for chunk in self.pool.map(
                _apply_chunk, [step.ref] * n, [step.config] * n, [step.key] * n, [context] * n, args
            )
        )

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


class _RayEngine:
    """Ray Data: each checkpoint chunk is a dataset mapped in parallel; rows travel as JSON-free
    Python objects inside one column so Arrow never re-types them."""

    def __init__(self, workers: int, address: str | None) -> None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        import ray

        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = max(1, workers)
            ray.init(**kwargs)
        ray.data.DataContext.get_current().enable_progress_bars = False

    def map(self, step: PipelineStage, context: StageContext, rows: list[Row]) -> Iterator[list[Row]]:
        import pickle

        ref, config, key = step.ref, step.config, step.key

        def apply(item: dict[str, Any]) -> dict[str, Any]:
            row = pickle.loads(item["row"])
            return {"i": item["i"], "out": pickle.dumps(_apply_row(ref, config, key, context, row))}

        # Pickles of our own rows, made and read in this job: never untrusted input.
        items = [{"i": i, "row": pickle.dumps(row)} for i, row in enumerate(rows)]
        done = self.ray.data.from_items(items).map(apply).take_all()
        for item in sorted(done, key=lambda d: d["i"]):
            yield pickle.loads(item["out"])

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


# ---- the run -----------------------------------------------------------------------------------


def run_pipeline(
    pipeline: Pipeline | str | os.PathLike[str],
    *,
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    engine: Engine | str = Engine.LOCAL,
    workers: int = 0,
    ray_address: str | None = None,
    progress: bool = True,
    on_checkpoint: Callable[[str, int], None] | None = None,
) -> list[Row]:
    """Run every stage in order and return the final manifest rows (also in ``output/manifest.parquet``).

    ``workers`` = 0 runs MAP/EXPAND stages in this process (local engine only).
    """
    if not isinstance(pipeline, Pipeline):
        pipeline = load_pipeline(pipeline)
    engine = Engine(engine)
    input_path, output_path = Path(input_dir), Path(output_dir)
    if not input_path.is_dir():
        raise FileFormatError(input_path, "--input: expected a folder of media files, but it is not a folder")
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers: expected an integer >= 0, got {workers!r}")
    output_path.mkdir(parents=True, exist_ok=True)
    context = StageContext(input_dir=input_path.resolve(), output_dir=output_path.resolve())
    manifest_path = output_path / MANIFEST_NAME
    rows = read_manifest(manifest_path) if manifest_path.exists() else []
    runner: _LocalEngine | _RayEngine
    runner = _RayEngine(max(workers, 1), ray_address) if engine is Engine.RAY else _LocalEngine(workers)
    try:
        for step in pipeline.stages:
            stage = resolve_stage(step.ref)
            rows = _run_stage(
                stage, step, rows, context, runner, manifest_path, pipeline, progress, on_checkpoint
            )
    finally:
        runner.close()
    return rows


def _run_stage(
    stage: Stage,
    step: PipelineStage,
    rows: list[Row],
    context: StageContext,
    runner: _LocalEngine | _RayEngine,
    manifest_path: Path,
    pipeline: Pipeline,
    progress: bool,
    on_checkpoint: Callable[[str, int], None] | None,
) -> list[Row]:
    if stage.kind is StageKind.SOURCE:
        # a source already in the manifest (possibly split into segments since) is not added again
        known = {r["source"] for r in rows}
        new = [r for r in stage.fn(step.config, context) if r["source"] not in known]
        if not new:
            return rows
        for row in new:
            row["done"] = [*row.get("done", []), step.key]
        rows = rows + new
        write_manifest(manifest_path, rows)
        return _sorted(rows)
    if stage.kind is StageKind.TABLE:
        kept = [r for r in rows if r["kept"]]
        if kept and all(step.key in r["done"] for r in kept):
            return rows
        others = [r for r in rows if not r["kept"]]
        result = stage.fn([{**r, "done": list(r["done"])} for r in kept], step.config, context)
        for row in result:
            validate_values(
                {k: v for k, v in row.items() if k not in _TABLE_FIELDS}, stage=stage.name, clip_id=row["id"]
            )
            if step.key not in row["done"]:
                row["done"] = [*row["done"], step.key]
        rows = _sorted(others + list(result))
        write_manifest(manifest_path, rows)
        return rows
    todo = [r for r in rows if r["kept"] and step.key not in r["done"]]
    if not todo:
        return rows
    by_id = {r["id"]: r for r in rows}
    bar = tqdm(total=len(todo), desc=stage.name, unit="clip", disable=not progress, leave=False)
    try:
        for start in range(0, len(todo), pipeline.checkpoint_every):
            chunk = todo[start : start + pipeline.checkpoint_every]
            for row, out in zip(chunk, runner.map(step, context, chunk), strict=True):
                del by_id[row["id"]]
                for item in out:
                    if item["id"] in by_id:
                        raise SkyReelsError(f"stage {stage.name!r}: clip id {item['id']!r} already exists")
                    by_id[item["id"]] = item
                bar.update(1)
            write_manifest(manifest_path, by_id.values())
            if on_checkpoint is not None:
                on_checkpoint(stage.name, start + len(chunk))
    finally:
        bar.close()
    return _sorted(by_id.values())


_TABLE_FIELDS = ("id", "source", "start_s", "end_s", "kept", "drop_reason", "dropped_by", "done")


def _sorted(rows: Sequence[Row] | Any) -> list[Row]:
    return sorted(rows, key=lambda r: r["id"])
