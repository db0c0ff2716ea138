"""Data pipeline throughput (paper 3.4): clips per second per core for each per-clip stage.

Run: python -m pytest benchmarks/test_data_pipeline.py --benchmark-only -q
One group; the baseline is decoding the clip's frames (what every video stage pays at least), so
a stage's "speed-up" below 1 is its cost in units of one decode. Clip: 2 s, 24 fps, 96x64 H.264
test pattern (the world clips: 5 s, 16 fps, 64x64 with audio). One process, torch single-threaded:
clips/s/core = 1 / median seconds.
"""

from __future__ import annotations

import pytest
import torch

from skyreels_v4.data.manifest import new_row
from skyreels_v4.data.media import probe, read_frames
from skyreels_v4.data.stage import StageContext, build_config, resolve_stage
from skyreels_v4.data.testmedia import pan_texture, world_clip_with_offset
from skyreels_v4.world.media import write_mp4

STAGES = ["shots", "video_quality", "motion", "fingerprint", "audio_quality", "sync", "caption"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("bench")
    frames, audio, config = world_clip_with_offset(0, 0)
    write_mp4(folder / "world.mp4", frames, config.fps, audio, config.sample_rate)
    write_mp4(folder / "pan.mp4", pan_texture(0, 48), 24.0)
    yield folder
    torch.set_num_threads(threads)


def _row(folder, name):
    info = probe(folder / name)
    return new_row(
        id=name,
        source=name,
        start_s=0.0,
        end_s=info.duration_s,
        fps=info.fps,
        width=info.width,
        height=info.height,
        has_audio=info.has_audio,
        sample_rate=info.sample_rate,
    )


def test_decode_baseline(benchmark, clip):
    benchmark.group = "data stages: seconds per clip (1 core)"
    benchmark.extra_info.update(
        impl="decode frames", baseline=True, shape="world 81x64x64", dtype="uint8", device="cpu"
    )
    benchmark(read_frames, clip / "world.mp4", 0.0, 5.0625, width=64)


@pytest.mark.parametrize("name", STAGES)
def test_stage(benchmark, clip, name):
    stage = resolve_stage(name)
    config = build_config(stage, {})
    context = StageContext(input_dir=clip, output_dir=clip / "out")
    row = _row(clip, "world.mp4")
    benchmark.group = "data stages: seconds per clip (1 core)"
    benchmark.extra_info.update(
        impl=name, baseline=False, shape="world 81x64x64 + 16 kHz audio", dtype="uint8", device="cpu"
    )
    result = benchmark.pedantic(
        stage.fn, args=(row, config, context), rounds=3, iterations=1, warmup_rounds=1
    )
    benchmark.extra_info["clips_per_s_per_core"] = 1.0 / benchmark.stats.stats.median
    assert result is not None
