"""Runner guarantees: resume after a kill without redoing finished rows, local == Ray, typed errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from skyreels_v4.data import read_manifest, run_pipeline, stage_key
from skyreels_v4.data.cli import main
from skyreels_v4.errors import FileFormatError, NonFiniteError

COUNTING_STAGE = """
import os
from dataclasses import dataclass
from skyreels_v4.data import StageKind, StageResult, new_row, register_stage

@dataclass(frozen=True, kw_only=True)
class ListConfig:
    count: int = 10

@register_stage("test_list", StageKind.SOURCE, ListConfig)
def list_rows(config, context):
    return [new_row(id=f"c{n:02d}", source=f"c{n:02d}", start_s=0.0, end_s=1.0) for n in range(config.count)]

@dataclass(frozen=True, kw_only=True)
class CountConfig:
    value: float = 1.0

@register_stage("test_count", StageKind.MAP, CountConfig)
def count(row, config, context):
    log = context.output_dir / "calls.txt"
    with open(log, "a") as handle:
        handle.write(row["id"] + "\\n")
    kill_at = int(os.environ.get("KILL", "-1"))  # outside the config: the stage key stays the same
    if kill_at >= 0 and len(log.read_text().split()) > kill_at:
        os.kill(os.getpid(), 9)  # a real SIGKILL half way through the stage
    return StageResult(values={"square": int(row["id"][1:]) ** 2, "x": config.value},
                       drop="odd" if int(row["id"][1:]) % 2 else None)
"""


def _pipeline(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent("""
        checkpoint_every: 2
        stages:
          - stage: "counting_stage:list_rows"
          - stage: "counting_stage:count"
            params: {value: 2.5}
    """)
    )
    return path


def test_resume_after_kill_redoes_nothing(tmp_path):
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "counting_stage.py").write_text(COUNTING_STAGE)
    (tmp_path / "in").mkdir()
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'mod'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = tmp_path / "out"

    def run(kill_at):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "skyreels_v4.data.cli",
                "run",
                str(_pipeline(tmp_path)),
                "--input",
                str(tmp_path / "in"),
                "--output",
                str(out),
                "--quiet",
            ],
            env={**env, "KILL": str(kill_at)},
            capture_output=True,
            text=True,
        )

    first = run(5)
    assert first.returncode == -9, first.stderr
    calls = (out / "calls.txt").read_text().split()
    assert calls == [f"c{n:02d}" for n in range(6)]  # killed on the 6th call
    rows = read_manifest(out / "manifest.parquet")
    done = sorted(r["id"] for r in rows if any(k.startswith("test_count@") for k in r["done"]))
    assert done == ["c00", "c01", "c02", "c03"]  # two checkpoints of two rows were written
    second = run(-1)
    assert second.returncode == 0, second.stderr
    # only the rows after the last checkpoint ran again (c04 had run but was not checkpointed)
    assert (out / "calls.txt").read_text().split()[6:] == [f"c{n:02d}" for n in range(4, 10)]
    rows = {r["id"]: r for r in read_manifest(out / "manifest.parquet")}
    assert [r["square"] for r in rows.values()] == [n * n for n in range(10)]
    assert all(r["x"] == 2.5 for r in rows.values())
    assert [r["kept"] for r in rows.values()] == [n % 2 == 0 for n in range(10)]
    assert {r["drop_reason"] for r in rows.values() if not r["kept"]} == {"odd"}


@pytest.fixture(scope="module")
def small_media(tmp_path_factory):
    from skyreels_v4.data.testmedia import pan_texture
    from skyreels_v4.world.media import write_mp4

    folder = tmp_path_factory.mktemp("media")
    for seed in range(3):
        write_mp4(folder / f"pan{seed}.mp4", pan_texture(seed, 24), 24.0)
    write_mp4(folder / "pan0_copy.mp4", pan_texture(0, 24), 24.0, crf=28)
    return folder


def _yaml(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent("""
        checkpoint_every: 8
        stages:
          - stage: scan_videos
          - stage: video_quality
            params: {min_duration_s: 0.5}
          - stage: motion
          - stage: fingerprint
          - stage: dedup
    """)
    )
    return path


def test_ray_small_pipeline_equals_inline(tmp_path, monkeypatch):
    """Local Ray (num_cpus=1), ten rows of a weight-free stage: the same manifest as in-process."""
    pytest.importorskip("ray")
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "counting_stage.py").write_text(COUNTING_STAGE)
    (tmp_path / "in").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path / "mod"))
    # Ray's workers inherit the environment at ray.init: they import the stage module from here
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path / 'mod'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.delenv("KILL", raising=False)
    pipeline = _pipeline(tmp_path)  # one Ray dataset per checkpoint: ten rows in one chunk
    pipeline.write_text(pipeline.read_text().replace("checkpoint_every: 2", "checkpoint_every: 10"))
    inline = run_pipeline(pipeline, input_dir=tmp_path / "in", output_dir=tmp_path / "inline", progress=False)
    ray_rows = run_pipeline(
        pipeline,
        input_dir=tmp_path / "in",
        output_dir=tmp_path / "ray",
        engine="ray",
        workers=1,
        progress=False,
    )
    assert ray_rows == inline
    assert [r["square"] for r in ray_rows] == [n * n for n in range(10)]
    assert read_manifest(tmp_path / "ray" / "manifest.parquet") == inline
    assert sorted((tmp_path / "ray" / "calls.txt").read_text().split()) == [f"c{n:02d}" for n in range(10)]


@pytest.mark.slow  # ~48 s here: Ray start-up plus decoding on 2 shared cores (the fast test is above)
def test_ray_gives_the_same_manifest_as_local(small_media, tmp_path):
    pytest.importorskip("ray")
    pipeline = _yaml(tmp_path)
    inline = run_pipeline(pipeline, input_dir=small_media, output_dir=tmp_path / "inline", progress=False)
    ray_rows = run_pipeline(
        pipeline, input_dir=small_media, output_dir=tmp_path / "ray", engine="ray", workers=2, progress=False
    )
    assert ray_rows == inline
    assert read_manifest(tmp_path / "ray" / "manifest.parquet") == inline
    assert [r["drop_reason"] for r in inline if not r["kept"]] == ["duplicate_of:pan0"]


@pytest.mark.slow
def test_process_pool_gives_the_same_manifest_as_inline(small_media, tmp_path):
    pipeline = _yaml(tmp_path)
    inline = run_pipeline(pipeline, input_dir=small_media, output_dir=tmp_path / "inline", progress=False)
    pool = run_pipeline(
        pipeline, input_dir=small_media, output_dir=tmp_path / "pool", workers=2, progress=False
    )
    assert pool == inline


def test_stage_keys_follow_parameters():
    from skyreels_v4.data.video_stages import MotionConfig

    assert stage_key("motion", MotionConfig()) == stage_key("motion", MotionConfig())
    assert stage_key("motion", MotionConfig()) != stage_key("motion", MotionConfig(max_jitter=3.0))


def test_bad_pipelines_raise_naming_the_problem(tmp_path, small_media, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - stage: scan_videos\n  - stage: motion\n    params: {max_jiter: 1}\n")
    with pytest.raises(FileFormatError, match=r"stages\[1\].*max_jiter"):
        run_pipeline(bad, input_dir=small_media, output_dir=tmp_path / "o")
    bad.write_text("stages:\n  - stage: no_such_stage\n")
    with pytest.raises(FileFormatError, match="no_such_stage"):
        run_pipeline(bad, input_dir=small_media, output_dir=tmp_path / "o")
    assert main(["run", str(bad), "--input", str(small_media), "--output", str(tmp_path / "o")]) == 2
    assert "no_such_stage" in capsys.readouterr().err
    good = _yaml(tmp_path)
    assert (
        main(["run", str(good), "--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    )
    assert "--input" in capsys.readouterr().err
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(FileFormatError, match="manifest"):
        read_manifest(tmp_path / "junk.parquet")


def test_non_finite_values_are_refused(tmp_path):
    from skyreels_v4.data.manifest import validate_values

    with pytest.raises(NonFiniteError, match="'blur' of clip 'a'"):
        validate_values({"blur": float("nan")}, stage="video_quality", clip_id="a")
    with pytest.raises(ValueError, match="fixed column"):
        validate_values({"kept": True}, stage="s", clip_id="a")
