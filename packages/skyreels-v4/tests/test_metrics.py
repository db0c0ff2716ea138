"""Weight-free metrics on the world: ground truth scores perfectly, corruptions fall as expected."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from skyreels_v4.metrics import (
    AudioVideoSync,
    ObjectAdherence,
    PitchAdherence,
    PitchConfig,
    SyncConfig,
    TrackingConfig,
    classify_pixels,
    connected_components,
    detect_bounces,
    detect_onsets,
    largest_component,
    match_events,
    nearest_offsets,
    reference_connected_components,
    track_clip,
)
from skyreels_v4.metrics.bounces import BounceConfig
from skyreels_v4.metrics.onsets import OnsetConfig
from skyreels_v4.world import (
    Background,
    Colour,
    ProceduralAVDataset,
    Scene,
    Shape,
    WorldConfig,
    WorldObject,
    render_scene,
)

CONFIG = WorldConfig()  # the metrics are validated on the default world: 64 x 64, 16 fps, 81 frames
NUM_CLIPS = 8


@pytest.fixture(autouse=True)
def world_one_thread():
    # Small tensors: one intra-op thread avoids spin-wait contention on shared 2-core machines.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def world_clips():
    dataset = ProceduralAVDataset(CONFIG, length=NUM_CLIPS, seed=2024, split="all")
    return [dataset.clip(i) for i in range(NUM_CLIPS)], default_collate(
        [dataset[i] for i in range(NUM_CLIPS)]
    )


@pytest.fixture(scope="module")
def world_sync_truth(world_clips):
    _, batch = world_clips
    metric = AudioVideoSync(SyncConfig(fps=CONFIG.fps, sample_rate=CONFIG.sample_rate))
    metric.update(batch["video"], batch["audio"])
    return {key: float(value) for key, value in metric.compute().items()}


def _video(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float().div(127.5).sub(1).unsqueeze(0)


def _sync(video, audio) -> dict[str, float]:
    metric = AudioVideoSync(SyncConfig(fps=CONFIG.fps, sample_rate=CONFIG.sample_rate))
    metric.update(video, audio)
    return {key: float(value) for key, value in metric.compute().items()}


def _adherence(video, batch, **labels) -> dict[str, float]:
    metric = ObjectAdherence()
    metric.update(
        video,
        labels.get("colour_ids", batch["colour_ids"]),
        labels.get("shape_ids", batch["shape_ids"]),
        labels.get("background_ids", batch["background_id"]),
    )
    return {key: float(value) for key, value in metric.compute().items()}


# --- building blocks ----------------------------------------------------------------------------


def test_connected_components_match_the_bfs_reference():
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 17, 23, generator=generator) < torch.tensor([0.3, 0.45, 0.55, 0.6, 0.7, 0.9]).view(
        6, 1, 1
    )
    spiral = np.zeros((17, 23), dtype=bool)  # one long winding component: many propagation steps
    (
        spiral[1, 1:22],
        spiral[1:16, 21],
        spiral[15, 3:22],
        spiral[3:16, 3],
        spiral[3, 3:19],
        spiral[3:13, 18],
    ) = (True,) * 6
    masks = torch.cat([masks, torch.from_numpy(spiral)[None]])
    labels = connected_components(masks)
    for image, label in zip(masks.numpy(), labels.numpy()):
        np.testing.assert_array_equal(label, reference_connected_components(image))
    assert len(np.unique(labels[-1])) == 2  # background + the spiral
    kept = largest_component(masks)
    for image, keep in zip(masks.numpy(), kept.numpy()):
        reference = reference_connected_components(image)
        sizes = np.bincount(reference.ravel())[1:]
        assert keep.sum() == (sizes.max() if sizes.size else 0)


def test_pixels_take_the_nearest_palette_colour():
    colours = [Background.NAVY.rgb, Colour.ORANGE.rgb, (240, 145, 60), (128, 0, 255), Colour.WHITE.rgb]
    frames = torch.tensor(colours, dtype=torch.float64).T.reshape(1, 3, 1, 5) / 127.5 - 1
    classes = classify_pixels(frames, max_distance=80.0)[0, 0].tolist()
    # 3 + colour id for objects, -1 for a colour far from every reference.
    assert classes == [
        Background.NAVY.index,
        3 + Colour.ORANGE.index,
        3 + Colour.ORANGE.index,
        -1,
        3 + Colour.WHITE.index,
    ]


def test_tracks_recover_the_ground_truth(world_clips):
    clips, batch = world_clips
    errors = []
    for clip, video in zip(clips, batch["video"]):
        tracks = track_clip(video, TrackingConfig())
        assert tracks.background == clip.scene.background.index
        assert set(np.flatnonzero(tracks.present)) == {o.colour.index for o in clip.scene.objects}
        for n, obj in enumerate(clip.scene.objects):
            assert tracks.shapes[obj.colour.index] == obj.shape.index
            clean = tracks.clean[obj.colour.index]
            expected = clip.truth.positions[:, n].copy()
            if obj.shape is Shape.TRIANGLE:  # clean frames report the centroid, 1/6 below the box centre
                expected[:, 1] += obj.size / 6
            errors.append(np.abs(tracks.centre[obj.colour.index, clean] - expected[clean]) * CONFIG.size)
    errors = np.concatenate(errors)
    assert np.median(errors) < 0.3 and errors.max() < 1.5  # pixels


def test_detectors_find_the_ground_truth_events(world_clips):
    clips, batch = world_clips
    tolerance = 1 / CONFIG.fps
    margin = 3 / CONFIG.fps
    matched = total = 0
    onset_errors = []
    for clip, video, audio in zip(clips, batch["video"], batch["audio"]):
        bounces = detect_bounces(track_clip(video, TrackingConfig()), CONFIG.fps, BounceConfig())
        hits = clip.truth.hit_times
        inside = hits[(hits > margin) & (hits < CONFIG.duration_s - margin)]
        match = match_events(inside, bounces, tolerance)
        matched, total = matched + match.offsets.size, total + inside.size
        onsets = detect_onsets(audio, CONFIG.sample_rate, OnsetConfig())
        sounded = clip.truth.hit_times[clip.truth.hit_sounded]
        isolated = sounded[np.diff(sounded, prepend=-1.0) > 0.03]  # closer blips merge into one onset
        onset_errors.append(nearest_offsets(isolated, onsets))
    assert matched / total >= 0.95  # one-to-one within one frame
    onset_errors = np.concatenate(onset_errors)
    assert np.abs(onset_errors).max() < 0.002  # seconds: onsets are sample-accurate to ~1 ms


# --- synchronisation ----------------------------------------------------------------------------


def test_ground_truth_is_synchronised(world_sync_truth):
    scores = world_sync_truth
    assert scores["recall"] >= 0.97 and scores["precision"] >= 0.97
    assert abs(scores["mean_offset_s"]) < 0.01
    assert scores["chance_recall"] < 0.5 and scores["chance_precision"] < 0.5
    assert scores["f1_gain"] > 0.5
    assert scores["num_clips"] == NUM_CLIPS


def test_shifted_audio_falls_to_chance(world_clips, world_sync_truth):
    _, batch = world_clips
    delay = round(0.3 * CONFIG.sample_rate)
    late = torch.nn.functional.pad(batch["audio"], (delay, 0))[..., : batch["audio"].shape[-1]]
    scores = _sync(batch["video"], late)
    assert scores["recall"] < world_sync_truth["chance_recall"] + 0.1
    assert abs(scores["recall"] - scores["chance_recall"]) < 0.15
    assert abs(scores["f1"] - scores["chance_f1"]) < 0.15
    assert scores["recall"] < world_sync_truth["recall"] - 0.5


def test_other_clips_audio_scores_exactly_the_chance_level(world_clips, world_sync_truth):
    _, batch = world_clips
    # Chance pairs audio i with video i + 1; giving video j the audio of clip j - 1 is that pairing.
    scores = _sync(batch["video"], batch["audio"].roll(1, dims=0))
    for key in ("recall", "precision", "f1"):
        assert scores[key] == pytest.approx(world_sync_truth[f"chance_{key}"], abs=1e-12)


def test_single_clip_has_no_chance_level(world_clips):
    _, batch = world_clips
    scores = _sync(batch["video"][:1], batch["audio"][:1])
    assert scores["recall"] >= 0.9 and np.isnan(scores["chance_recall"]) and np.isnan(scores["f1_gain"])
    # Silence: nothing is heard (recall 0, F1 0); precision has no onsets to judge (NaN).
    silent = _sync(batch["video"][:2], torch.zeros_like(batch["audio"][:2]))
    assert silent["recall"] == 0.0 and silent["f1"] == 0.0 and np.isnan(silent["precision"])
    assert silent["chance_f1"] == 0.0 and silent["f1_gain"] == 0.0
    with pytest.warns(UserWarning, match="before the ``update``"):
        empty = AudioVideoSync(SyncConfig(fps=16.0, sample_rate=44100)).compute()
    assert float(empty["num_clips"]) == 0 and torch.isnan(empty["recall"])


# --- pitch --------------------------------------------------------------------------------------


def test_ground_truth_pitch_matches_the_shapes(world_clips):
    _, batch = world_clips
    metric = PitchAdherence(PitchConfig(sample_rate=CONFIG.sample_rate))
    metric.update(batch["audio"], batch["shape_ids"])
    scores = {key: float(value) for key, value in metric.compute().items()}
    assert scores["tone_accuracy"] == 1.0 and scores["shape_recall"] == 1.0
    assert scores["mean_abs_cents"] < 5.0 and scores["num_tones"] > 4 * NUM_CLIPS


def test_wrong_pitch_fails():
    scenes, prompts = [], []
    for k, shape in enumerate(Shape):
        obj = WorldObject(
            colour=Colour.RED, shape=shape, size=0.2, start=(0.3 + 0.1 * k, 0.5), velocity=(0.6, 0.3)
        )
        scenes.append(Scene(background=Background.BLACK, objects=(obj,), has_bgm=k == 1))
        prompts.append([(shape.index + 1) % 3])  # the prompt names another shape
    audio = torch.stack([torch.from_numpy(render_scene(s, CONFIG)[1]) for s in scenes])
    metric = PitchAdherence(PitchConfig(sample_rate=CONFIG.sample_rate))
    metric.update(audio, torch.tensor(prompts))
    scores = metric.compute()
    assert float(scores["tone_accuracy"]) == 0.0 and float(scores["shape_recall"]) == 0.0
    assert float(scores["num_tones"]) > 0


# --- object adherence ---------------------------------------------------------------------------


def test_ground_truth_adheres_to_its_prompt(world_clips):
    _, batch = world_clips
    scores = _adherence(batch["video"], batch)
    assert scores == dict.fromkeys(scores, 1.0)


def _rerender(clip, **changes):
    first = dataclasses.replace(clip.scene.objects[0], **changes)
    scene = dataclasses.replace(clip.scene, objects=(first, *clip.scene.objects[1:]))
    return _video(render_scene(scene, CONFIG)[0])


def test_wrong_colour_or_shape_fails_adherence(world_clips):
    clips, batch = world_clips
    chosen = list(range(4))
    sub = {key: value[chosen] for key, value in batch.items() if isinstance(value, torch.Tensor)}
    num_objects = int((sub["colour_ids"] >= 0).sum())
    recoloured, reshaped = [], []
    for i in chosen:
        used = {o.colour for o in clips[i].scene.objects}
        spare = next(c for c in Colour if c not in used)
        recoloured.append(_rerender(clips[i], colour=spare))
        reshaped.append(
            _rerender(clips[i], shape=Shape.from_index((clips[i].scene.objects[0].shape.index + 1) % 3))
        )
    wrong_colour = _adherence(torch.cat(recoloured), sub)
    assert wrong_colour["colour_accuracy"] == pytest.approx((num_objects - 4) / num_objects)
    assert wrong_colour["object_accuracy"] == pytest.approx((num_objects - 4) / num_objects)
    assert wrong_colour["shape_accuracy"] == 1.0 and wrong_colour["clip_accuracy"] == 0.0
    wrong_shape = _adherence(torch.cat(reshaped), sub)
    assert wrong_shape["colour_accuracy"] == 1.0 and wrong_shape["count_accuracy"] == 1.0
    assert wrong_shape["shape_accuracy"] == pytest.approx((num_objects - 4) / num_objects)
    assert wrong_shape["object_accuracy"] == pytest.approx((num_objects - 4) / num_objects)
    wrong_background = _adherence(sub["video"], sub, background_ids=(sub["background_id"] + 1) % 3)
    assert wrong_background["background_accuracy"] == 0.0 and wrong_background["object_accuracy"] == 1.0


def test_metrics_tolerate_imperfect_drawings(world_clips):
    _, batch = world_clips
    generator = torch.Generator().manual_seed(1)
    video = batch["video"][:4]
    tint = torch.tensor([0.06, -0.06, 0.04]).view(1, 3, 1, 1, 1)  # ~8 levels of colour drift
    noisy = (video + tint + 0.04 * torch.randn(video.shape, generator=generator)).clamp(-1, 1)
    sub = {key: value[:4] for key, value in batch.items() if isinstance(value, torch.Tensor)}
    assert _adherence(noisy, sub)["object_accuracy"] == 1.0
    assert _sync(noisy, batch["audio"][:4])["recall"] >= 0.9


# --- invariances and errors ---------------------------------------------------------------------


def test_batching_does_not_change_any_metric(world_clips):
    _, batch = world_clips
    n = 4

    def fresh():
        return [
            AudioVideoSync(SyncConfig(fps=CONFIG.fps, sample_rate=CONFIG.sample_rate)),
            ObjectAdherence(),
            PitchAdherence(PitchConfig(sample_rate=CONFIG.sample_rate)),
        ]

    together, alone = fresh(), fresh()
    for metrics, chunks in ((together, [slice(0, n)]), (alone, [slice(i, i + 1) for i in range(n)])):
        for part in chunks:
            metrics[0].update(batch["video"][part], batch["audio"][part])
            metrics[1].update(batch["video"][part], batch["colour_ids"][part], batch["shape_ids"][part])
            metrics[2].update(batch["audio"][part], batch["shape_ids"][part])
    for a, b in zip(together, alone):
        left, right = a.compute(), b.compute()
        assert left.keys() == right.keys()
        for key in left:
            torch.testing.assert_close(left[key], right[key], rtol=0, atol=0, equal_nan=True)


def test_float64_inputs_give_the_same_results(world_clips):
    _, batch = world_clips
    part = slice(0, 3)
    results = []
    for dtype in (torch.float32, torch.float64):
        video, audio = batch["video"][part].to(dtype), batch["audio"][part].to(dtype)
        sync = _sync(video, audio)
        adherence = _adherence(
            video, {key: value[part] for key, value in batch.items() if isinstance(value, torch.Tensor)}
        )
        pitch = PitchAdherence(PitchConfig(sample_rate=CONFIG.sample_rate))
        pitch.update(audio, batch["shape_ids"][part])
        results.append((sync, adherence, {key: float(value) for key, value in pitch.compute().items()}))
    (sync32, adh32, pitch32), (sync64, adh64, pitch64) = results
    assert adh32 == adh64
    for key in ("recall", "precision", "chance_recall", "num_bounces", "num_onsets"):
        assert sync32[key] == sync64[key]
    assert sync32["mean_offset_s"] == pytest.approx(sync64["mean_offset_s"], abs=2e-4)
    assert pitch32["tone_accuracy"] == pitch64["tone_accuracy"]
    assert pitch32["mean_abs_cents"] == pytest.approx(pitch64["mean_abs_cents"], abs=0.05)


def test_half_precision_is_promoted(world_clips):
    _, batch = world_clips
    scores = _adherence(
        batch["video"][:2].to(torch.bfloat16),
        {k: v[:2] for k, v in batch.items() if isinstance(v, torch.Tensor)},
    )
    assert scores["object_accuracy"] == 1.0


def _bad_inputs():
    video = torch.zeros(2, 3, 4, 8, 8)
    audio = torch.zeros(2, 1, round(4 / 16 * 44100))
    ids = torch.tensor([[0, -1], [1, 2]])
    return video, audio, ids


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m, v, a, i: m["sync"].update(v[:, :2], a), ValueError, "video"),
        (lambda m, v, a, i: m["sync"].update(v[0], a), ValueError, "video"),
        (lambda m, v, a, i: m["sync"].update(v.long(), a), TypeError, "video"),
        (lambda m, v, a, i: m["sync"].update(v * 0 + 2, a), ValueError, r"\[-1, 1\]"),
        (lambda m, v, a, i: m["sync"].update(v * float("nan"), a), ValueError, "finite"),
        (lambda m, v, a, i: m["sync"].update(v, a[:1]), ValueError, "batch"),
        (lambda m, v, a, i: m["sync"].update(v, a[..., :1000]), ValueError, "audio"),
        (lambda m, v, a, i: m["sync"].update(v.numpy(), a), TypeError, "video"),
        (lambda m, v, a, i: m["pitch"].update(a[:, 0], i), ValueError, "audio"),
        (lambda m, v, a, i: m["pitch"].update(a, i.float()), TypeError, "shape_ids"),
        (lambda m, v, a, i: m["pitch"].update(a, i + 5), ValueError, "shape_ids"),
        (lambda m, v, a, i: m["adherence"].update(v, i, i[:, :1]), ValueError, "shape_ids"),
        (
            lambda m, v, a, i: m["adherence"].update(v, i, torch.tensor([[0, 1], [1, 2]])),
            ValueError,
            "padding",
        ),
        (
            lambda m, v, a, i: m["adherence"].update(v, torch.tensor([[0, 0], [1, 2]]), i.abs()),
            ValueError,
            "distinct",
        ),
        (lambda m, v, a, i: m["adherence"].update(v, i + 8, i), ValueError, "colour_ids"),
        (
            lambda m, v, a, i: m["adherence"].update(v, i, i, torch.tensor([0, 3])),
            ValueError,
            "background_ids",
        ),
        (lambda m, v, a, i: m["adherence"].update(v, i, i, torch.tensor([0])), ValueError, "background_ids"),
    ],
)
def test_bad_inputs_raise_with_the_argument_name(call, error, match):
    video, audio, ids = _bad_inputs()
    metrics = {
        "sync": AudioVideoSync(SyncConfig(fps=16.0, sample_rate=44100)),
        "pitch": PitchAdherence(PitchConfig(sample_rate=44100)),
        "adherence": ObjectAdherence(),
    }
    with pytest.raises(error, match=match):
        call(metrics, video, audio, ids)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: SyncConfig(fps=0, sample_rate=44100), "fps"),
        (lambda: SyncConfig(fps=16, sample_rate=44100, tolerance_s=-1), "tolerance_s"),
        (lambda: PitchConfig(sample_rate=44100, tolerance_cents=300), "tolerance_cents"),
        (lambda: TrackingConfig(max_colour_distance=0), "max_colour_distance"),
        (lambda: BounceConfig(smooth_frames=2), "smooth_frames"),
        (lambda: OnsetConfig(hop_s=0.1), "hop_s"),
        (lambda: AudioVideoSync({"fps": 16}), "config"),
        (lambda: ObjectAdherence(tracking={"max_colour_distance": 3}), "tracking"),
    ],
)
def test_bad_configs_raise(factory, match):
    with pytest.raises((ValueError, TypeError), match=match):
        factory()


def test_scores_at_a_wider_tolerance_rematch_the_same_events(world_clips, world_sync_truth):
    """Audio 3 frames late: not recalled at one frame, all recalled at four; ``scores_at`` at the
    config's own tolerance is ``compute()``."""
    _, batch = world_clips
    delay = round(3 / CONFIG.fps * CONFIG.sample_rate)
    late = torch.nn.functional.pad(batch["audio"], (delay, 0))[..., : batch["audio"].shape[-1]]
    metric = AudioVideoSync(SyncConfig(fps=CONFIG.fps, sample_rate=CONFIG.sample_rate))
    metric.update(batch["video"], late)
    exact = {key: float(value) for key, value in metric.compute().items()}
    same = metric.scores_at(1 / CONFIG.fps)
    assert same.keys() == exact.keys()
    assert all(same[k] == pytest.approx(exact[k], nan_ok=True) for k in exact)
    wide = metric.scores_at(4 / CONFIG.fps)
    assert exact["recall"] < 0.4 and wide["recall"] >= world_sync_truth["recall"] - 0.05  # 0.28 at one frame
    assert wide["mean_offset_s"] > 0.05  # audio late (nearest onsets include other bounces' blips)
    with pytest.raises(ValueError, match="tolerance_s: expected seconds > 0, got 0"):
        metric.scores_at(0)


def test_band_activity_is_the_share_of_time_a_blip_band_sound_is_on():
    from skyreels_v4.metrics import OnsetConfig, band_activity

    rate = 16000
    t = torch.arange(rate, dtype=torch.float64) / rate  # one second
    tone = torch.sin(2 * torch.pi * 1000 * t)
    config = OnsetConfig()
    assert band_activity(tone[None], rate, config) == pytest.approx(1.0, abs=0.01)  # never stops
    blips = torch.zeros(rate, dtype=torch.float64)
    for start in (0.2, 0.5, 0.8):  # three 50 ms blips: 15 % of the second
        a, b = round(start * rate), round((start + 0.05) * rate)
        blips[a:b] = tone[a:b]
    assert band_activity(blips[None], rate, config) == pytest.approx(0.15, abs=0.02)
    drone = 0.5 * torch.sin(2 * torch.pi * 100 * t)  # below the blip band: not counted
    assert band_activity((blips + drone)[None], rate, config) == pytest.approx(0.15, abs=0.02)
    assert band_activity(torch.zeros(1, rate), rate, config) == 0.0
    with pytest.raises(ValueError, match="relative: expected a number in"):
        band_activity(tone[None], rate, config, relative=1.5)
