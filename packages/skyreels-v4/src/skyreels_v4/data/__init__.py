"""The data pipeline of paper 3.4 (docs/data-pipeline.md): stages over a Parquet manifest, run from a
pipeline YAML locally or on Ray Data, with model hooks that have weight-free defaults."""

from skyreels_v4.data.captions import STRUCTURED_TAGS, merge_structured_caption, validate_structured_caption
from skyreels_v4.data.export import CAPTIONS_NAME, read_captions
from skyreels_v4.data.manifest import MANIFEST_NAME, Row, new_row, read_manifest, stage_key, write_manifest
from skyreels_v4.data.report import summarize, write_report
from skyreels_v4.data.runner import Engine, Pipeline, load_pipeline, run_pipeline
from skyreels_v4.data.stage import (
    Drop,
    HookSpec,
    StageContext,
    StageKind,
    StageResult,
    drop_row,
    load_hook,
    register_stage,
    stage_names,
)
from skyreels_v4.data.sync import OnsetMotionSync, SyncEstimate, SyncEstimator

__all__ = [
    "CAPTIONS_NAME",
    "MANIFEST_NAME",
    "STRUCTURED_TAGS",
    "Drop",
    "Engine",
    "HookSpec",
    "OnsetMotionSync",
    "Pipeline",
    "Row",
    "StageContext",
    "StageKind",
    "StageResult",
    "SyncEstimate",
    "SyncEstimator",
    "drop_row",
    "load_hook",
    "load_pipeline",
    "merge_structured_caption",
    "new_row",
    "read_captions",
    "read_manifest",
    "register_stage",
    "run_pipeline",
    "stage_key",
    "stage_names",
    "summarize",
    "validate_structured_caption",
    "write_manifest",
    "write_report",
]
