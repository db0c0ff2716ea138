"""The world as files: the gallery command, .mp4/.wav writers, the montage, atomic writes."""

from __future__ import annotations

import json
import math

import av
import numpy as np
import pytest
import soundfile

from skyreels_v4.world import WorldConfig, WorldSplit, make_clip, write_mp4, write_wav
from skyreels_v4.world import media as media_module
from skyreels_v4.world.gallery import main

GALLERY_ARGS = ("--num-clips", "3", "--seed", "4", "--split", "heldout", "--num-frames", "33")


@pytest.fixture(scope="module")
def world_gallery(tmp_path_factory):
    out = tmp_path_factory.mktemp("gallery")
    assert main(["--out", str(out), *GALLERY_ARGS]) == 0
    return out


def test_gallery_writes_every_file_and_nothing_else(world_gallery):
    names = sorted(p.name for p in world_gallery.iterdir())
    stems = [f"clip_{i:03d}" for i in range(3)]
    expected = sorted(
        [f"{s}.{ext}" for s in stems for ext in ("mp4", "wav", "json")] + ["montage.png", "gallery.json"]
    )
    assert names == expected  # no temporary files left behind
    index = json.loads((world_gallery / "gallery.json").read_text())
    assert index["clips"] == stems and index["split"] == "heldout" and index["config"]["num_frames"] == 33
    assert (world_gallery / "montage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gallery_files_match_the_dataset_clip(world_gallery):
    config = WorldConfig(num_frames=33)
    clip = make_clip(config, seed=4, index=1, split=WorldSplit.HELDOUT)
    record = json.loads((world_gallery / "clip_001.json").read_text())
    assert record["caption"] == clip.caption
    assert record["labels"]["colour_ids"] == clip.labels()["colour_ids"].tolist()
    np.testing.assert_allclose([h["time_s"] for h in record["wall_hits"]], clip.truth.hit_times)

    wav, rate = soundfile.read(world_gallery / "clip_001.wav", dtype="float64", always_2d=True)
    assert rate == config.sample_rate and wav.shape == (config.num_samples, 1)
    np.testing.assert_allclose(wav[:, 0], clip.audio[0], atol=1.0 / 32767)  # 16-bit PCM

    with av.open(str(world_gallery / "clip_001.mp4")) as container:
        kinds = {s.type: s.codec_context.name for s in container.streams}
        assert kinds == {"video": "h264", "audio": "aac"}
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames.shape == clip.frames.shape
    # Lossy H.264 with 4:2:0 chroma: close on average, not bit-exact.
    assert np.abs(frames.astype(float) - clip.frames).mean() < 4.0
    with av.open(str(world_gallery / "clip_001.mp4")) as container:
        audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    # AAC adds encoder priming (about one 1024-sample frame) and pads the last frame.
    assert abs(audio.shape[1] - config.num_samples) <= 2048
    first_hit = math.ceil(clip.truth.hit_times[clip.truth.hit_sounded][0] * config.sample_rate)
    loud = np.flatnonzero(np.abs(audio[0]) > 0.5 * config.tone_amplitude)[0]
    assert abs(loud - first_hit) <= 2048


def test_writers_are_atomic(tmp_path, monkeypatch):
    clip = make_clip(WorldConfig(num_frames=9), seed=0, index=0)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(media_module.soundfile, "write", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_wav(tmp_path / "a.wav", clip.audio, 44100)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"frames": np.zeros((2, 7, 8, 3), np.uint8)}, "even"),
        ({"frames": np.zeros((2, 8, 8, 3), np.float32)}, "uint8"),
        ({"audio": np.zeros((3, 100), np.float32)}, "audio"),
        ({"audio": np.full((1, 100), 1.5, np.float32)}, "audio"),
        ({"sample_rate": None}, "sample_rate"),
    ],
)
def test_mp4_writer_rejects_bad_input(tmp_path, kwargs, match):
    args = {
        "frames": np.zeros((2, 8, 8, 3), np.uint8),
        "audio": np.zeros((1, 100), np.float32),
        "sample_rate": 16000,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        write_mp4(tmp_path / "x.mp4", args["frames"], 16.0, args["audio"], args["sample_rate"])
    assert list(tmp_path.iterdir()) == []


def test_gallery_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--num-clips", "0"])
    with pytest.raises(ValueError, match="size"):
        main(["--out", str(tmp_path), "--size", "4"])


def _decoded(path):
    with av.open(str(path)) as container:
        video = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        audio = [bytes(p) for p in container.demux(audio=0) if p.size]
    return video.astype(np.int16), audio


def test_gallery_output_is_reproducible(world_gallery, tmp_path):
    """WAV, PNG and JSON files are byte-identical across runs. libx264 is not bit-reproducible
    on this machine (even with one thread), so the mp4s must carry identical audio packets and
    decode to the same video within a few levels."""
    assert main(["--out", str(tmp_path), *GALLERY_ARGS]) == 0
    for path in world_gallery.iterdir():
        again = tmp_path / path.name
        if path.suffix != ".mp4":
            assert again.read_bytes() == path.read_bytes(), path.name
            continue
        (video_a, audio_a), (video_b, audio_b) = _decoded(path), _decoded(again)
        assert audio_a == audio_b, path.name
        assert video_a.shape == video_b.shape, path.name
        assert np.abs(video_a - video_b).mean() < 2.0, path.name
