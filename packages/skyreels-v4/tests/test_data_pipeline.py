"""The data pipeline of paper 3.4 on media made here, against the known truth of each file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from skyreels_v4.data import read_captions, read_manifest, run_pipeline
from skyreels_v4.data.media import probe
from skyreels_v4.data.testmedia import write_audio_set, write_video_set

RECIPES = __import__("pathlib").Path(__file__).resolve().parents[3] / "recipes" / "data"
OFFSETS = (0, 2, 8, -10)


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    media = tmp_path_factory.mktemp("videos")
    truth = write_video_set(media, world_offsets=OFFSETS)
    out = tmp_path_factory.mktemp("video_out")
    rows = run_pipeline(RECIPES / "video_av.yaml", input_dir=media, output_dir=out, progress=False)
    return media, out, truth, {r["id"]: r for r in rows}


def _segments(rows, stem):
    return sorted((r for r in rows.values() if r["id"].startswith(stem + "/")), key=lambda r: r["id"])


@pytest.mark.parametrize("stem", ["cuts", "fade"])
def test_shot_boundaries_within_one_frame(video_run, stem):
    _, _, truth, rows = video_run
    segments = _segments(rows, stem)
    fps = segments[0]["fps"]
    found = [round(s["start_s"] * fps) for s in segments[1:]]
    assert len(found) == len(truth[stem]["cut_frames"])
    assert all(abs(f - t) <= 1 for f, t in zip(found, truth[stem]["cut_frames"], strict=True))


def test_filters_decide_like_the_truth(video_run):
    _, _, truth, rows = video_run
    for stem, expected in truth.items():
        if "cut_frames" in expected:
            assert all(r["kept"] for r in _segments(rows, stem)), stem
            continue
        (row,) = _segments(rows, stem)
        stage = expected.get("drop")
        if stage is None:
            assert row["kept"], (stem, row["dropped_by"], row["drop_reason"])
        else:
            assert not row["kept"] and row["dropped_by"] == stage, (
                stem,
                row["dropped_by"],
                row["drop_reason"],
            )
    assert rows["steady_copy/s000"]["drop_reason"] == "duplicate_of:steady/s000"
    assert rows["dropped_frames/s000"]["drop_reason"] == "frame_drops"
    assert rows["shaky/s000"]["drop_reason"].startswith("shaky")
    assert rows["blurry/s000"]["drop_reason"].startswith("blurry")
    assert rows["dark/s000"]["drop_reason"].startswith("underexposed")


def test_sync_offsets_follow_the_shift(video_run):
    _, _, _, rows = video_run
    for n, offset in enumerate(OFFSETS):
        row = rows[f"world{n}_offset{offset:+d}/s000"]
        if abs(offset) <= 3:  # kept: the estimate is within the paper's tolerance and confident
            assert abs(row["sync_offset_frames"] - offset) <= 2 and row["sync_confidence"] > 1.5
        else:  # rejected: the estimate points the right way and is far off
            assert (
                np.sign(row["sync_offset_frames"]) == np.sign(offset) and abs(row["sync_offset_frames"]) > 3
            )


def test_export_writes_cut_clips_and_captions(video_run):
    _, out, _, rows = video_run
    entries = read_captions(out / "export")
    # the cache takes audio from the clip: kept clips without audio are left out (silent: skip)
    kept = sorted(r["id"] for r in rows.values() if r["kept"] and r["has_audio"])
    assert [e["id"] for e in entries] == kept and len(kept) == sum(abs(o) <= 3 for o in OFFSETS)
    silent = [r for r in rows.values() if r["kept"] and not r["has_audio"]]
    assert silent and all(r["export_skipped"] == "no_audio" for r in silent)
    for entry in entries:
        row = rows[entry["id"]]
        info = probe(out / "export" / entry["video"])
        assert entry["caption"] == row["caption"] and entry["start_s"] == 0.0
        assert abs(info.duration_s - (row["end_s"] - row["start_s"])) < 0.1
    world = next(e for e in entries if e["id"].startswith("world0"))
    assert "<sfx>" in world["caption"] and probe(out / "export" / world["video"]).has_audio


def test_rerun_does_no_work_and_report_counts(video_run, tmp_path):
    media, out, _, rows = video_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = (copy / "manifest.parquet").read_bytes()
    calls = []
    again = run_pipeline(
        RECIPES / "video_av.yaml",
        input_dir=media,
        output_dir=copy,
        progress=False,
        on_checkpoint=lambda stage, n: calls.append(stage),
    )
    assert calls == [] and {r["id"]: r for r in again} == rows
    assert (
        before == (copy / "manifest.parquet").read_bytes()
        or read_manifest(copy / "manifest.parquet") == again
    )
    from skyreels_v4.data.cli import main

    assert main(["report", "--output", str(copy)]) == 0
    summary = json.loads((copy / "report" / "summary.json").read_text())
    assert summary["clips"] == len(rows) and summary["kept"] == sum(r["kept"] for r in rows.values())
    assert summary["dropped"]["dedup: duplicate_of:steady/s000"] == 1
    assert (copy / "report" / "motion.png").stat().st_size > 1000


def test_audio_filters_decide_like_the_truth(tmp_path):
    truth = write_audio_set(tmp_path / "audio")
    rows = {
        r["id"]: r
        for r in run_pipeline(
            RECIPES / "audio.yaml", input_dir=tmp_path / "audio", output_dir=tmp_path / "out", progress=False
        )
    }
    reasons = {"snr": "noisy", "volume": "quiet", "clipping": "clipping", "vad": "silent"}
    for stem, expected in truth.items():
        row = rows[stem]
        if expected.get("drop"):
            assert not row["kept"] and row["drop_reason"].startswith(reasons[expected["drop"]]), (stem, row)
        else:
            assert row["kept"], (stem, row["drop_reason"])
        if "category" in expected:
            assert row["category"] == expected["category"], stem
    if "speech" not in truth:
        pytest.skip("espeak-ng is not installed: speech clips were not made")
