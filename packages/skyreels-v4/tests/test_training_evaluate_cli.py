"""``skyreels-v4 evaluate`` (training/evaluate_cli.py) and ``evaluate_splits``: rescoring a saved model
folder with other sampling settings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from skyreels_v4.cli import main as toolkit_main
from skyreels_v4.pipeline import SkyReelsV4Pipeline
from skyreels_v4.training.evaluate import EVALUATION_SEED_OFFSET, evaluate_splits, world_for_pipeline
from skyreels_v4.training.evaluate_cli import main


def _sound(path: Path) -> np.ndarray:
    """The decoded AAC track of an mp4 (the file's bytes also hold its creation time)."""
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray() for f in container.decode(container.streams.audio[0])], axis=-1)


def test_the_command_equals_evaluate_splits_with_its_seed_and_sampling(tiny_folder, tmp_path, one_thread):
    out = tmp_path / "eval"
    args = ["--model", str(tiny_folder), "--out", str(out), "--clips", "2", "--tasks", "v2a"]
    args += ["--splits", "heldout_pairs", "--audio-guidance", "5", "--steps", "1", "--seed", "3", "--quiet"]
    assert main(args) == 0
    written = json.loads((out / "metrics.json").read_text())
    assert written["sampling"]["audio_guidance"] == 5.0 and written["sampling"]["num_steps"] == 1
    assert sorted(written) == ["heldout_pairs", "model", "sampling"]
    assert sorted(written["heldout_pairs"]) == ["ground_truth", "v2a"]
    for name in (
        "metrics.md",
        "metrics.json",
        "montage.png",
        "sync_timeline.png",
        "v2a_00.mp4",
        "v2a_01.mp4",
    ):
        assert (out / "heldout_pairs" / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "audio_guidance 5.0" in report and "Held-out colour-shape pairs (2 clips" in report
    assert not (out / "seen_pairs").exists()

    pipe = SkyReelsV4Pipeline.from_pretrained(tiny_folder)
    sampling = replace(pipe.sampling, audio_guidance=5.0, num_steps=1)
    direct = evaluate_splits(
        pipe,
        world=world_for_pipeline(pipe),
        out_dir=tmp_path / "direct",
        num_clips=2,
        seed=3 + EVALUATION_SEED_OFFSET,
        tasks=("v2a",),
        sampling=sampling,
        splits=("heldout_pairs",),
        progress=False,
    )
    for task, row in written["heldout_pairs"].items():
        for key, value in row.items():
            reference = direct["heldout_pairs"][task][key]
            assert value == reference or (value is None and reference != reference), (task, key)
    clip = _sound(out / "heldout_pairs" / "v2a_00.mp4")
    assert np.array_equal(clip, _sound(tmp_path / "direct" / "heldout_pairs" / "v2a_00.mp4"))
    # The folder's own sampling (2 steps, audio guidance 2) generates another sound from the same seed.
    other = evaluate_splits(
        pipe,
        world=world_for_pipeline(pipe),
        out_dir=tmp_path / "other",
        num_clips=2,
        seed=3 + EVALUATION_SEED_OFFSET,
        tasks=("v2a",),
        splits=("heldout_pairs",),
        progress=False,
    )
    assert sorted(other["heldout_pairs"]) == ["ground_truth", "v2a"]
    assert not np.array_equal(clip, _sound(tmp_path / "other" / "heldout_pairs" / "v2a_00.mp4"))


def test_frames_scores_clips_of_another_length(tiny_folder, tmp_path, one_thread):
    """``--frames`` overrides the folder's ``defaults.num_frames`` (9 here): the world's clips, the
    generated clips and the report all have the asked length."""
    out = tmp_path / "eval"
    args = [
        "--model",
        str(tiny_folder),
        "--out",
        str(out),
        "--clips",
        "2",
        "--tasks",
        "t2av",
        "--frames",
        "13",
    ]
    assert main([*args, "--splits", "heldout_pairs", "--steps", "1", "--quiet"]) == 0
    assert "clips of 13 frames" in (out / "report.md").read_text()
    with av.open(str(out / "heldout_pairs" / "t2av_00.mp4")) as container:
        assert sum(1 for _ in container.decode(container.streams.video[0])) == 13


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--tasks", "t2v"], "--tasks"),
        (["--tasks", "v2a,v2a"], "--tasks"),
        (["--tasks", ""], "--tasks"),
        (["--splits", "train"], "--splits"),
        (["--clips", "1"], "--clips"),
        (["--seed", "-1"], "--seed"),
        (["--max-objects", "0"], "--max-objects"),
        (["--max-objects", "9"], "--max-objects"),
        (["--frames", "4"], "--frames"),
        (["--frames", "11"], "--frames"),  # the tiny folder's codec packs 4 frames per latent frame
        (["--frames", "many"], "--frames"),
        (["--audio-guidance", "99"], "--audio-guidance"),
        (["--video-guidance", "nan"], "--video-guidance"),
        (["--steps", "0"], "--steps"),
        (["--shift", "-2"], "--shift"),
        (["--solver", "rk4"], "--solver"),
        (["--audio-rescale", "1.5"], "--audio-rescale"),
        (["--video-rescale", "-0.1"], "--video-rescale"),
        (["--audio-guidance-interval", "0.5"], "--audio-guidance-interval"),
        (["--audio-guidance-interval", "0.9,0.1"], "--audio-guidance-interval"),
        (["--video-guidance-interval", "a,b"], "--video-guidance-interval"),
        (["--video-guidance-interval", "0,2"], "--video-guidance-interval"),
        (["--audio-guidance-interval", "0,nan"], "--audio-guidance-interval"),
    ],
)
def test_bad_flags_are_one_line_errors_naming_the_flag_and_write_nothing(
    tiny_folder, tmp_path, capsys, flags, needle
):
    out = tmp_path / "eval"
    code = toolkit_main(["evaluate", "--model", str(tiny_folder), "--out", str(out), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not out.exists()


def test_a_missing_or_broken_model_folder_is_named(tmp_path, capsys):
    out = tmp_path / "eval"
    assert toolkit_main(["evaluate", "--model", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json")
    assert toolkit_main(["evaluate", "--model", str(broken), "--out", str(out)]) == 2
    assert "model_index.json" in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_splits_rejects_unknown_splits_and_tasks(tiny_pipe, tmp_path):
    world = world_for_pipeline(tiny_pipe)
    with pytest.raises(ValueError, match="splits"):
        evaluate_splits(tiny_pipe, world=world, out_dir=tmp_path, num_clips=2, seed=0, splits=("val",))
    with pytest.raises(ValueError, match="tasks"):
        evaluate_splits(tiny_pipe, world=world, out_dir=tmp_path, num_clips=2, seed=0, tasks=("t2v",))
    assert not any(tmp_path.iterdir())


def test_world_for_pipeline_follows_the_folder_and_needs_an_audio_vae(tiny_folder):
    pipe = SkyReelsV4Pipeline.from_pretrained(tiny_folder)
    world = world_for_pipeline(pipe, max_objects=1)
    d = pipe.defaults
    assert (world.size, world.num_frames, world.fps) == (d.height, d.num_frames, d.fps)
    assert world.sample_rate == pipe.audio_vae.sample_rate and world.max_objects == 1
    assert world_for_pipeline(pipe, size=48, frames=13).size == 48
    pipe.audio_vae = None
    with pytest.raises(ValueError, match="--model here: expected a model with an audio VAE"):
        world_for_pipeline(pipe, name="--model here")
