"""Validate the metrics on the world: ``python -m skyreels_v4.metrics.validation --num-clips 32``.

Scores ground-truth clips and controlled corruptions of them and prints a markdown table (the
numbers in docs/metrics.md). Rows:

* ``ground truth``: the clips as rendered;
* ``audio delayed 0.3 s``: the waveform shifted later by 0.3 s (zeros in front);
* ``audio of another clip``: clip ``i`` gets the audio of clip ``i - 1``;
* ``first object recoloured`` / ``reshaped``: the video re-rendered with the first object in an
  unused colour / the next shape, scored against the original prompt;
* ``noisy drawing``: colour drift (about 8 levels per channel) plus Gaussian noise (σ = 0.04).

A second table scores the two detectors against the exact ground truth (one-to-one matching
within one frame, events inside the evaluation window): video bounces vs all wall hits, audio
onsets vs the sounded hits.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import default_collate

from skyreels_v4.metrics.adherence import ObjectAdherence
from skyreels_v4.metrics.bounces import detect_bounces
from skyreels_v4.metrics.events import match_events
from skyreels_v4.metrics.onsets import detect_onsets
from skyreels_v4.metrics.pitch import PitchAdherence, PitchConfig
from skyreels_v4.metrics.sync import AudioVideoSync, SyncConfig
from skyreels_v4.metrics.tracking import track_clip
from skyreels_v4.world.clip import WorldClip, render_scene
from skyreels_v4.world.config import WorldConfig
from skyreels_v4.world.dataset import ProceduralAVDataset
from skyreels_v4.world.palette import Colour, Shape
from skyreels_v4.world.split import WorldSplit

_COLUMNS = (
    ("sync", "recall"),
    ("sync", "precision"),
    ("sync", "mean_offset_s"),
    ("sync", "chance_recall"),
    ("sync", "f1_gain"),
    ("pitch", "tone_accuracy"),
    ("pitch", "shape_recall"),
    ("adherence", "colour_accuracy"),
    ("adherence", "shape_accuracy"),
    ("adherence", "object_accuracy"),
    ("adherence", "count_accuracy"),
)


def _rerender(clip: WorldClip, **changes) -> torch.Tensor:
    first = dataclasses.replace(clip.scene.objects[0], **changes)
    scene = dataclasses.replace(clip.scene, objects=(first, *clip.scene.objects[1:]))
    frames = render_scene(scene, clip.config)[0]
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float().div(127.5).sub(1)


def score(
    config: WorldConfig, video: torch.Tensor, audio: torch.Tensor, batch: dict
) -> dict[str, dict[str, float]]:
    """All three metrics on ``video [B, 3, F, H, W]`` / ``audio [B, C, S]`` against ``batch``'s labels."""
    sync = AudioVideoSync(SyncConfig(fps=config.fps, sample_rate=config.sample_rate))
    pitch = PitchAdherence(PitchConfig(sample_rate=config.sample_rate))
    adherence = ObjectAdherence()
    sync.update(video, audio)
    pitch.update(audio, batch["shape_ids"])
    adherence.update(video, batch["colour_ids"], batch["shape_ids"], batch["background_id"])
    return {
        name: {key: float(value) for key, value in metric.compute().items()}
        for name, metric in (("sync", sync), ("pitch", pitch), ("adherence", adherence))
    }


def validation_rows(config: WorldConfig, num_clips: int, seed: int) -> dict[str, dict[str, dict[str, float]]]:
    """Scores of the ground truth and of each corruption (see the module docstring)."""
    dataset = ProceduralAVDataset(config, length=num_clips, seed=seed, split=WorldSplit.ALL)
    clips = [dataset.clip(i) for i in range(num_clips)]
    batch = default_collate([dataset[i] for i in range(num_clips)])
    video, audio = batch["video"], batch["audio"]
    delay = round(0.3 * config.sample_rate)
    delayed = torch.nn.functional.pad(audio, (delay, 0))[..., : audio.shape[-1]]
    recoloured = torch.stack(
        [
            _rerender(c, colour=next(k for k in Colour if k not in {o.colour for o in c.scene.objects}))
            for c in clips
        ]
    )
    reshaped = torch.stack(
        [_rerender(c, shape=Shape.from_index((c.scene.objects[0].shape.index + 1) % 3)) for c in clips]
    )
    generator = torch.Generator().manual_seed(seed)
    tint = torch.tensor([0.06, -0.06, 0.04]).view(1, 3, 1, 1, 1)
    noisy = (video + tint + 0.04 * torch.randn(video.shape, generator=generator)).clamp(-1, 1)
    return {
        "ground truth": score(config, video, audio, batch),
        "audio delayed 0.3 s": score(config, video, delayed, batch),
        "audio of another clip": score(config, video, audio.roll(1, dims=0), batch),
        "first object recoloured": score(config, recoloured, audio, batch),
        "first object reshaped": score(config, reshaped, audio, batch),
        "noisy drawing": score(config, noisy, audio, batch),
    }


def detector_rows(config: WorldConfig, num_clips: int, seed: int) -> dict[str, dict[str, float]]:
    """Bounce and onset detectors against the ground-truth hit times (see the module docstring)."""
    sync = SyncConfig(fps=config.fps, sample_rate=config.sample_rate)
    dataset = ProceduralAVDataset(config, length=num_clips, seed=seed, split=WorldSplit.ALL)
    margin = sync.edge_margin_frames / config.fps
    totals = {
        name: {"truth": 0, "found": 0, "matched_truth": 0, "matched_found": 0, "errors": []}
        for name in ("bounces", "onsets")
    }
    for index in range(num_clips):
        clip = dataset.clip(index)
        video, audio = torch.from_numpy(clip.video()), torch.from_numpy(clip.audio)
        found = {
            "bounces": detect_bounces(track_clip(video, sync.tracking), config.fps, sync.bounces),
            "onsets": detect_onsets(audio, config.sample_rate, sync.onsets),
        }
        truth = {"bounces": clip.truth.hit_times, "onsets": clip.truth.hit_times[clip.truth.hit_sounded]}
        for name, total in totals.items():
            ref, est = truth[name], found[name]
            match = match_events(ref, est, sync.tolerance)
            ref_in = (ref >= margin) & (ref <= config.duration_s - margin)
            est_in = (est >= margin) & (est <= config.duration_s - margin)
            total["truth"] += int(ref_in.sum())
            total["found"] += int(est_in.sum())
            total["matched_truth"] += int(ref_in[match.reference_index].sum())
            total["matched_found"] += int(est_in[match.estimate_index].sum())
            total["errors"].append(match.offsets[ref_in[match.reference_index]])
    rows = {}
    for name, total in totals.items():
        errors = np.concatenate(total["errors"])
        rows[name] = {
            "recall": total["matched_truth"] / total["truth"],
            "precision": total["matched_found"] / total["found"],
            "mean_error_ms": 1000 * float(errors.mean()),
            "mean_abs_error_ms": 1000 * float(np.abs(errors).mean()),
            "max_abs_error_ms": 1000 * float(np.abs(errors).max()),
            "events": total["truth"],
        }
    return rows


def markdown_table(rows: dict[str, dict[str, dict[str, float]]]) -> str:
    header = "| case | " + " | ".join(f"{m}.{k}" for m, k in _COLUMNS) + " |"
    lines = [header, "|---" * (len(_COLUMNS) + 1) + "|"]
    for name, values in rows.items():
        cells = []
        for metric, key in _COLUMNS:
            value = values[metric][key]
            cells.append(
                "nan"
                if math.isnan(value)
                else f"{value * 1000:+.1f} ms"
                if key.endswith("_s")
                else f"{value:.3f}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


from skyreels_v4.cli import nonnegative_int, positive_int  # noqa: E402 - keeps the metrics import-light


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skyreels_v4.metrics.validation", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--num-clips", type=positive_int, default=32)
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    args = parser.parse_args(argv)
    if args.num_clips < 2:
        raise SystemExit(f"--num-clips: expected >= 2 (chance needs two clips), got {args.num_clips}")
    config = WorldConfig()
    start = time.perf_counter()
    rows = validation_rows(config, args.num_clips, args.seed)
    print(markdown_table(rows))
    columns = ("recall", "precision", "mean error", "mean abs error", "max abs error", "events")
    print("\n| detector vs ground truth | " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|")
    for name, row in detector_rows(config, args.num_clips, args.seed).items():
        print(
            f"| {name} | {row['recall']:.3f} | {row['precision']:.3f} | {row['mean_error_ms']:+.2f} ms | "
            f"{row['mean_abs_error_ms']:.2f} ms | {row['max_abs_error_ms']:.2f} ms | {row['events']} |"
        )
    print(
        f"\n{args.num_clips} clips of the default world (seed {args.seed}, split all, "
        f"{config.size}x{config.size}, {config.fps:g} fps, {config.num_frames} frames, "
        f"{config.sample_rate} Hz); "
        f"{time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
