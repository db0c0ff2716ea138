"""The procedural audio-visual world: configuration, motion, rendering, captions, split, dataset."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from skyreels_v4.world import (
    HELDOUT_PAIRS,
    Background,
    Colour,
    ProceduralAVDataset,
    Scene,
    Shape,
    Wall,
    WorldConfig,
    WorldObject,
    WorldSplit,
    caption,
    clip_rng,
    make_clip,
    positions_at,
    reference_render_frame,
    render_audio,
    render_frames,
    render_scene,
    sample_scene,
    simulate,
    wall_hits,
)


@pytest.fixture(autouse=True)
def world_one_thread():
    # Small tensors: one intra-op thread avoids spin-wait contention on shared 2-core machines.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _object(colour, shape, size=0.2, start=(0.5, 0.5), velocity=(0.3, 0.2)):
    return WorldObject(colour=colour, shape=shape, size=size, start=start, velocity=velocity)


def _scene(*objects, background=Background.BLACK, has_bgm=False):
    return Scene(background=background, objects=tuple(objects), has_bgm=has_bgm)


# --- configuration and vocabulary ---------------------------------------------------------------


def test_palette_values_are_the_specification():
    assert [c.rgb for c in Colour] == [
        (220, 40, 40), (40, 200, 60), (50, 80, 230), (230, 220, 50),
        (210, 60, 200), (60, 210, 220), (235, 235, 235), (240, 140, 30),
    ]  # fmt: skip
    assert [b.rgb for b in Background] == [(10, 10, 10), (110, 110, 110), (20, 25, 70)]
    assert [s.pitch_hz for s in Shape] == [440.0, 660.0, 880.0]
    assert all(Colour.from_index(c.index) is c for c in Colour)
    assert Shape.from_index(np.int64(2)) is Shape.TRIANGLE


@pytest.mark.parametrize(
    ("factory", "index", "error"),
    [
        (Colour, 8, ValueError),
        (Shape, -1, ValueError),
        (Background, 1.0, TypeError),
        (Shape, True, TypeError),
    ],
)
def test_palette_rejects_bad_ids(factory, index, error):
    with pytest.raises(error, match="id"):
        factory.from_index(index)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 4}, "size"),
        ({"fps": 0}, "fps"),
        ({"num_frames": 1}, "num_frames"),
        ({"sample_rate": 2000}, "sample_rate"),
        ({"audio_channels": 3}, "audio_channels"),
        ({"min_objects": 3, "max_objects": 2}, "min_objects"),
        ({"object_size_range": (0.3, 0.2)}, "object_size_range"),
        ({"speed_range": (0.0, 0.5)}, "speed_range"),
        ({"min_axis_angle_deg": 50}, "min_axis_angle_deg"),
        ({"tone_amplitude": 0.5}, "tone_amplitude"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WorldConfig(**kwargs)


def test_config_derived_sizes():
    config = WorldConfig()
    assert config.duration_s == pytest.approx(81 / 16)
    assert config.num_samples == 223256  # 81 / 16 s at 44.1 kHz, the paper's 5.06 s clip
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.size = 32  # type: ignore[misc]


# --- motion -------------------------------------------------------------------------------------


def test_wall_hits_are_exact_reflections():
    config = WorldConfig()
    for index in range(30):
        scene = sample_scene(config, clip_rng(7, index, WorldSplit.ALL), WorldSplit.ALL)
        times, objects, walls = wall_hits(scene, config.duration_s)
        assert np.all(np.diff(times) >= 0) and np.all((times > 0) & (times < config.duration_s))
        for t, n, wall in zip(times, objects, walls):
            obj = scene.objects[n]
            axis = 0 if wall in (Wall.LEFT, Wall.RIGHT) else 1
            at_wall = obj.size / 2 if wall in (Wall.LEFT, Wall.TOP) else 1 - obj.size / 2
            here, before, after = positions_at(scene, np.array([t, t - 1e-4, t + 1e-4]))[:, n, axis]
            assert here == pytest.approx(at_wall, abs=1e-9)
            # The object approaches the wall and leaves it: same side before and after.
            assert (before - here) * (after - here) > 0
        # No other reversal: between hits of one axis the coordinate is monotonic.
        frames = positions_at(scene, np.linspace(0, config.duration_s, 4001))
        for n, obj in enumerate(scene.objects):
            assert (
                frames[:, n].min() >= obj.size / 2 - 1e-12 and frames[:, n].max() <= 1 - obj.size / 2 + 1e-12
            )
            for axis in range(2):
                steps = np.sign(np.diff(frames[:, n, axis]))
                flips = int((steps[1:] != steps[:-1]).sum())
                hits = int(((objects == n) & np.isin(walls, (0, 1) if axis == 0 else (2, 3))).sum())
                assert flips == hits


def test_hit_times_do_not_depend_on_frame_rate_or_resolution():
    scene = sample_scene(WorldConfig(), clip_rng(3, 0, WorldSplit.TRAIN), WorldSplit.TRAIN)
    slow = simulate(scene, WorldConfig(fps=16.0, num_frames=81))
    fast = simulate(scene, WorldConfig(fps=32.0, num_frames=161, size=128))
    np.testing.assert_array_equal(slow.hit_times, fast.hit_times)
    np.testing.assert_allclose(slow.positions, fast.positions[::2], atol=1e-12)


def test_every_object_hits_a_wall_in_a_default_clip():
    # The guarantee behind pitch recall: a speed >= 0.3 at >= 20 degrees from the axes reaches a
    # wall within (1 - 0.15) / (0.3 cos 45) = 4.0 s < 5.06 s.
    config = WorldConfig()
    margin = 3 / config.fps
    for index in range(200):
        scene = sample_scene(config, clip_rng(1, index, WorldSplit.ALL), WorldSplit.ALL)
        times, objects, _ = wall_hits(scene, config.duration_s)
        inside = (times > margin) & (times < config.duration_s - margin)
        assert set(objects[inside].tolist()) == set(range(len(scene.objects)))


def test_corner_hits_sound_once():
    config = WorldConfig()
    # From the centre, equal speeds along x and y reach the bottom-right corner at one instant.
    scene = _scene(_object(Colour.RED, Shape.SQUARE, size=0.2, start=(0.5, 0.5), velocity=(0.3, 0.3)))
    truth = simulate(scene, config)
    assert truth.hit_times[0] == pytest.approx(truth.hit_times[1]) == pytest.approx(0.4 / 0.3)
    assert truth.hit_sounded[:2].tolist() == [True, False]


# --- rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize("antialias", [True, False])
def test_render_frames_matches_per_pixel_reference(antialias):
    config = WorldConfig(size=24, num_frames=4, antialias=antialias)
    scene = _scene(
        _object(Colour.RED, Shape.CIRCLE, size=0.35, start=(0.3, 0.4)),
        _object(Colour.BLUE, Shape.TRIANGLE, size=0.4, start=(0.45, 0.5), velocity=(-0.5, 0.1)),
        _object(Colour.WHITE, Shape.SQUARE, size=0.25, start=(0.7, 0.7), velocity=(0.2, -0.6)),
        background=Background.NAVY,
    )
    positions = simulate(scene, config).positions
    frames = render_frames(scene, positions, config)
    for k in range(config.num_frames):
        reference = reference_render_frame(scene, positions[k], config).astype(int)
        assert np.abs(frames[k].astype(int) - reference).max() <= 1  # float32 vs float64 rounding


@pytest.mark.parametrize(
    ("shape", "area", "centroid_dy"),
    [(Shape.CIRCLE, math.pi / 4, 0.0), (Shape.SQUARE, 1.0, 0.0), (Shape.TRIANGLE, 0.5, 1 / 6)],
)
def test_hard_edged_shapes_have_their_geometry(shape, area, centroid_dy):
    config = WorldConfig(size=256, num_frames=2, antialias=False)
    side = 0.4
    scene = _scene(_object(Colour.GREEN, shape, size=side, start=(0.5, 0.5), velocity=(0.0, 0.0)))
    frame = render_frames(scene, simulate(scene, config).positions, config)[0]
    mask = np.all(frame == np.array(Colour.GREEN.rgb, dtype=np.uint8), axis=-1)
    pixels = (side * config.size) ** 2
    assert mask.sum() / pixels == pytest.approx(area, rel=0.02)
    rows, cols = np.nonzero(mask)
    assert (cols.mean() + 0.5) / config.size == pytest.approx(0.5, abs=0.5 / config.size)
    assert (rows.mean() + 0.5) / config.size - 0.5 == pytest.approx(centroid_dy * side, abs=1.0 / config.size)
    # The triangle points up: its top row is narrow, its bottom row spans the box.
    if shape is Shape.TRIANGLE:
        widths = mask.sum(axis=1)[rows.min() : rows.max() + 1]
        assert widths[0] < 0.1 * widths[-1] and widths[-1] >= 0.95 * side * config.size


def test_blips_have_the_shape_pitch_and_start_on_the_hit():
    config = WorldConfig()
    scene = _scene(
        _object(Colour.RED, Shape.CIRCLE, start=(0.2, 0.5), velocity=(0.5, 0.0)),
        _object(Colour.GREEN, Shape.TRIANGLE, start=(0.5, 0.25), velocity=(0.0, -0.4)),
    )
    truth = simulate(scene, config)
    audio = render_audio(scene, truth, config)[0].astype(np.float64)
    assert audio.shape == (config.num_samples,) and np.abs(audio).max() <= config.tone_amplitude
    first = np.flatnonzero(np.abs(audio) > 0)[0]
    assert first == math.ceil(truth.hit_times.min() * config.sample_rate)
    for t, n in zip(truth.hit_times, truth.hit_objects):
        start = math.ceil(t * config.sample_rate)
        tone = audio[start : start + round(0.04 * config.sample_rate)]
        spectrum = np.abs(np.fft.rfft(tone * np.hanning(tone.size), n=1 << 16))
        peak_hz = np.argmax(spectrum) * config.sample_rate / (1 << 16)
        assert peak_hz == pytest.approx(scene.objects[n].shape.pitch_hz, abs=3.0)
    silent = audio[: math.ceil(truth.hit_times.min() * config.sample_rate)]
    assert np.all(silent == 0)


def test_drone_and_stereo_panning():
    config = WorldConfig(audio_channels=2)
    # One hit on the left wall at t = 0.5 s (box centre x = 0.1: gains cos/sin(0.05 pi)).
    obj = _object(Colour.RED, Shape.SQUARE, start=(0.35, 0.5), velocity=(-0.5, 0.0))
    dry_scene, wet_scene = _scene(obj), _scene(obj, has_bgm=True)
    truth = simulate(dry_scene, config)
    dry = render_audio(dry_scene, truth, config).astype(np.float64)
    wet = render_audio(wet_scene, truth, config).astype(np.float64)
    assert truth.hit_walls[0] == Wall.LEFT and truth.hit_times[0] == pytest.approx(0.5)
    start = math.ceil(0.5 * config.sample_rate)
    window = slice(start, start + round(0.03 * config.sample_rate))
    left, right = np.abs(dry[0, window]).max(), np.abs(dry[1, window]).max()
    assert right / left == pytest.approx(math.tan(0.05 * math.pi), rel=1e-3)
    drone = wet - dry  # the drone is centred: identical in both channels
    np.testing.assert_allclose(drone[0], drone[1], atol=1e-6)
    assert 0.5 * config.drone_amplitude < np.abs(drone).max() <= 2 * config.drone_amplitude + 1e-6


def test_default_clip_renders_well_under_a_second():
    config = WorldConfig()  # 64 x 64, 16 fps, 81 frames (5.06 s), 44.1 kHz
    make_clip(config, seed=0, index=0)
    best = min(_timed(lambda i=i: make_clip(config, seed=0, index=i)) for i in range(3))
    assert best < 0.5


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- captions and split -------------------------------------------------------------------------


def test_captions_follow_the_structured_format():
    red_circle = _object(Colour.RED, Shape.CIRCLE)
    blue_square = _object(Colour.BLUE, Shape.SQUARE)
    assert caption(_scene(red_circle, blue_square)) == (
        "A red circle and a blue square bounce inside a black box. <sfx>A 440 Hz blip each time the "
        "circle hits a wall, a 660 Hz blip for the square.</sfx>"
    )
    three = _scene(
        _object(Colour.ORANGE, Shape.TRIANGLE),
        _object(Colour.GREEN, Shape.CIRCLE),
        _object(Colour.WHITE, Shape.TRIANGLE),
        background=Background.NAVY,
        has_bgm=True,
    )
    assert caption(three) == (
        "An orange triangle, a green circle and a white triangle bounce inside a navy box. <sfx>An 880 Hz "
        "blip each time a triangle hits a wall, a 440 Hz blip for the circle.</sfx> <bgm>A quiet low "
        "drone plays throughout.</bgm>"
    )
    assert caption(_scene(_object(Colour.CYAN, Shape.SQUARE), background=Background.GRAY)) == (
        "A cyan square bounces inside a gray box. <sfx>A 660 Hz blip each time the square hits a wall.</sfx>"
    )


def test_heldout_pairs_are_fixed_and_split_is_respected():
    assert {(c.value, s.value) for c, s in HELDOUT_PAIRS} == {
        ("red", "triangle"), ("green", "circle"), ("blue", "square"), ("orange", "triangle"),
    }  # fmt: skip
    config = WorldConfig()
    train_pairs = set()
    for index in range(300):
        train = sample_scene(config, clip_rng(0, index, WorldSplit.TRAIN), WorldSplit.TRAIN)
        heldout = sample_scene(config, clip_rng(0, index, WorldSplit.HELDOUT), WorldSplit.HELDOUT)
        pairs = {(o.colour, o.shape) for o in train.objects}
        assert not pairs & HELDOUT_PAIRS
        assert {(o.colour, o.shape) for o in heldout.objects} & HELDOUT_PAIRS
        for scene in (train, heldout):
            assert len({o.colour for o in scene.objects}) == len(scene.objects)  # distinct colours
        train_pairs |= pairs
    # Every colour and every shape of a held-out pair is still seen in training.
    assert len(train_pairs) == 20
    assert {c for c, _ in train_pairs} == set(Colour) and {s for _, s in train_pairs} == set(Shape)


# --- determinism and the dataset ----------------------------------------------------------------


def _digest(clip) -> str:
    digest = hashlib.sha256(clip.frames.tobytes())
    digest.update(clip.audio.tobytes())
    digest.update(clip.caption.encode())
    return digest.hexdigest()


def test_clips_are_deterministic_across_processes_and_hash_seeds():
    config = WorldConfig(num_frames=17)
    here = [_digest(make_clip(config, seed=5, index=i, split=WorldSplit.HELDOUT)) for i in range(4)]
    code = (
        "import hashlib\n"
        "from skyreels_v4.world import WorldConfig, WorldSplit, make_clip\n"
        "for i in range(4):\n"
        "    c = make_clip(WorldConfig(num_frames=17), seed=5, index=i, split=WorldSplit.HELDOUT)\n"
        "    d = hashlib.sha256(c.frames.tobytes())\n"
        "    d.update(c.audio.tobytes())\n"
        "    d.update(c.caption.encode())\n"
        "    print(d.hexdigest())\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.split() == here


def test_dataset_items_are_deterministic_and_collate():
    config = WorldConfig(num_frames=33)
    dataset = ProceduralAVDataset(config, length=5, seed=9)
    forward = [dataset[i] for i in range(5)]
    backward = [ProceduralAVDataset(config, length=5, seed=9)[i] for i in reversed(range(5))][::-1]
    for a, b in zip(forward, backward):
        assert a["caption"] == b["caption"]
        torch.testing.assert_close(a["video"], b["video"], rtol=0, atol=0)
        torch.testing.assert_close(a["audio"], b["audio"], rtol=0, atol=0)
    other = ProceduralAVDataset(config, length=5, seed=10)[0]
    assert not torch.equal(other["video"], forward[0]["video"])

    batch = default_collate(forward)
    assert batch["video"].shape == (5, 3, 33, 64, 64) and batch["video"].dtype == torch.float32
    assert batch["audio"].shape == (5, 1, config.num_samples)
    assert float(batch["video"].min()) >= -1 and float(batch["video"].max()) <= 1
    assert batch["colour_ids"].shape == (5, config.max_objects)
    assert batch["hit_times"].shape == (5, config.max_wall_hits)

    clip = dataset.clip(2)
    item = forward[2]
    expected = torch.from_numpy(clip.frames).permute(3, 0, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(item["video"], expected, rtol=0, atol=1e-6)
    n, k = len(clip.scene.objects), int(item["num_hits"])
    assert k == clip.truth.hit_times.size and int(item["num_objects"]) == n
    np.testing.assert_array_equal(item["hit_times"][:k].numpy(), clip.truth.hit_times)
    assert torch.isnan(item["hit_times"][k:]).all() and (item["hit_objects"][k:] == -1).all()
    assert [Colour.from_index(int(c)) for c in item["colour_ids"][:n]] == [
        o.colour for o in clip.scene.objects
    ]
    assert (item["colour_ids"][n:] == -1).all() and torch.isnan(item["positions"][:, n:]).all()


def test_dataset_rejects_bad_arguments():
    config = WorldConfig(num_frames=9)
    with pytest.raises(ValueError, match="length"):
        ProceduralAVDataset(config, length=-1, seed=0)
    with pytest.raises(ValueError, match="seed"):
        ProceduralAVDataset(config, length=2, seed=-3)
    with pytest.raises(TypeError, match="config"):
        ProceduralAVDataset({"size": 64}, length=2, seed=0)  # type: ignore[arg-type]
    dataset = ProceduralAVDataset(config, length=2, seed=0)
    with pytest.raises(IndexError, match="index"):
        dataset[2]
    with pytest.raises(TypeError, match="index"):
        dataset["0"]  # type: ignore[index]


def test_render_scene_round_trip():
    config = WorldConfig(num_frames=9)
    clip = make_clip(config, seed=4, index=1)
    frames, audio, truth = render_scene(clip.scene, config)
    np.testing.assert_array_equal(frames, clip.frames)
    np.testing.assert_array_equal(audio, clip.audio)
    np.testing.assert_array_equal(truth.hit_times, clip.truth.hit_times)
