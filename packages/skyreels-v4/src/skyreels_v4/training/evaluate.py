"""Evaluate a generator on held-out procedural-world prompts with the weight-free metrics.

For each held-out clip (captions the model never trained on, including the held-out colour-shape pairs
of ``WorldSplit.HELDOUT``):

- ``t2av``: generate video + audio from the caption; score object adherence (colour, shape), pitch
  adherence and audio-video sync (recall, gain over the chance level of mismatched pairs);
- ``v2a``: give the ground-truth video, generate the audio; score sync and pitch;
- ``ground_truth``: the rendered clips themselves, the ceiling every number is read against.

Writes ``metrics.json`` and ``metrics.md``, the first clips as .mp4 (H.264 + AAC), a montage PNG
(ground truth, generated frames, both waveforms) and ``sync_timeline.png``: each first clip's audio
spectrogram with the bounces seen in its video and the onsets heard in its audio marked, the two event
lists that the sync metric matches.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import mlab
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch.utils.data import default_collate
from tqdm.auto import tqdm

from skyreels_v4.io import atomic_path, atomic_write_json, atomic_write_text
from skyreels_v4.metrics import (
    AudioVideoSync,
    ObjectAdherence,
    OnsetConfig,
    PitchAdherence,
    PitchConfig,
    SyncConfig,
    band_activity,
)
from skyreels_v4.pipeline.pipeline import crop_or_pad
from skyreels_v4.world import ProceduralAVDataset, WorldConfig, WorldSplit

__all__ = [
    "EVALUATION_SEED_OFFSET",
    "EVALUATION_SPLITS",
    "evaluate_generation",
    "evaluate_splits",
    "json_ready",
    "plot_loss_curves",
    "splits_report",
    "world_for_pipeline",
    "write_generation_montage",
    "write_sync_timeline",
]


def _score(video: torch.Tensor | None, audio: torch.Tensor | None, batch: dict, world: WorldConfig) -> dict:
    out: dict[str, float] = {}
    if video is not None:
        adherence = ObjectAdherence()
        adherence.update(video, batch["colour_ids"], batch["shape_ids"], batch["background_id"])
        out.update({f"adherence/{k}": float(v) for k, v in adherence.compute().items()})
    if audio is not None:
        pitch = PitchAdherence(PitchConfig(sample_rate=world.sample_rate))
        pitch.update(audio, batch["shape_ids"])
        out.update({f"pitch/{k}": float(v) for k, v in pitch.compute().items()})
        onsets = OnsetConfig()
        activity = [band_activity(clip, world.sample_rate, onsets) for clip in audio]
        out["audio/band_activity"] = sum(activity) / len(activity)
    if video is not None and audio is not None:
        sync = AudioVideoSync(SyncConfig(fps=world.fps, sample_rate=world.sample_rate))
        sync.update(video, audio)
        out.update({f"sync/{k}": float(v) for k, v in sync.compute().items()})
        for frames in WIDER_SYNC_TOLERANCES:  # the same clips, matched less precisely
            wider = sync.scores_at(frames / world.fps)
            out.update({f"sync@{frames}f/{k}": wider[k] for k in ("recall", "chance_recall", "recall_gain")})
    return out


#: Extra sync tolerances (video frames) scored beside the default one frame: a model that places its
#: blips near the bounces but not within a frame shows a gain here first.
WIDER_SYNC_TOLERANCES = (2, 4, 8)


def evaluate_generation(
    pipeline: Any,
    *,
    world: WorldConfig,
    out_dir: str | os.PathLike[str],
    num_clips: int = 16,
    seed: int = 1234,
    tasks: Sequence[str] = ("t2av", "v2a"),
    split: WorldSplit = WorldSplit.HELDOUT,
    num_videos: int = 4,
    sampling: Any = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Generate for ``num_clips`` clips of ``split`` and score them (module docstring)."""
    from skyreels_v4.pipeline import GenerationRequest

    root = Path(out_dir)
    data = ProceduralAVDataset(world, length=num_clips, seed=seed, split=split)
    items = [data[i] for i in range(num_clips)]
    batch = default_collate(items)
    results: dict[str, dict[str, float]] = {
        "ground_truth": _score(batch["video"], batch["audio"], batch, world)
    }
    generated: dict[str, list[Any]] = {}
    for task in tasks:
        videos, audios, outputs = [], [], []
        for i, item in enumerate(tqdm(items, desc=f"evaluating {task}", disable=not progress)):
            kwargs: dict[str, Any] = {
                "num_frames": world.num_frames,
                "height": world.size,
                "width": world.size,
                "fps": world.fps,
            }
            if task == "v2a":
                kwargs = {"video": item["video"], "fps": world.fps}
            request = GenerationRequest(prompt=item["caption"], task=task, seed=seed + i, **kwargs)
            output = pipeline(request, sampling=sampling, progress=False)
            videos.append(output.video)
            audios.append(crop_or_pad(output.audio, world.num_samples) if output.audio is not None else None)
            outputs.append(output)
            if i < num_videos:
                output.save(root / f"{task}_{i:02d}.mp4")
        video = torch.stack(videos) if videos[0] is not None else None
        audio = torch.stack(audios) if audios[0] is not None else None
        results[task] = _score(video, audio, batch, world)
        generated[task] = outputs
    atomic_write_json(root / "metrics.json", json_ready(results))
    atomic_write_text(root / "metrics.md", _markdown(results))
    shown = min(4, num_clips)
    write_generation_montage(
        root / "montage.png", items[:shown], {k: v[:4] for k, v in generated.items()}, world
    )
    timeline = {"ground truth": [(item["video"], item["audio"]) for item in items[:shown]]}
    for task, outputs in generated.items():
        if outputs[0].video is not None and outputs[0].audio is not None:
            timeline[task] = [(o.video, crop_or_pad(o.audio, world.num_samples)) for o in outputs[:shown]]
    write_sync_timeline(root / "sync_timeline.png", timeline, world)
    return results


def world_for_pipeline(
    pipeline: Any,
    *,
    max_objects: int = 2,
    size: int | None = None,
    frames: int | None = None,
    name: str = "pipeline",
) -> WorldConfig:
    """The procedural world at a model folder's default clip size, frame count and rate and its audio
    codec's sample rate (what the quickstart trained it on); ``size`` / ``frames`` override the folder's.
    ``name`` is what an error calls the pipeline (e.g. ``--model``)."""
    if pipeline.audio_vae is None:
        raise ValueError(f"{name}: expected a model with an audio VAE (the world's clips have sound)")
    defaults = pipeline.defaults
    return WorldConfig(
        size=size or defaults.height,
        num_frames=frames or defaults.num_frames,
        fps=defaults.fps,
        sample_rate=pipeline.audio_vae.sample_rate,
        max_objects=max_objects,
    )


#: Where generation is scored: new clips of colour-shape pairs seen in training, and clips with a pair
#: never seen in training (compositional generalisation), reported apart. Label -> world split.
EVALUATION_SPLITS = {"seen_pairs": WorldSplit.TRAIN, "heldout_pairs": WorldSplit.HELDOUT}


def evaluate_splits(
    pipeline: Any,
    *,
    world: WorldConfig,
    out_dir: str | os.PathLike[str],
    num_clips: int,
    seed: int,
    tasks: Sequence[str] = ("t2av", "v2a"),
    sampling: Any = None,
    splits: Sequence[str] = tuple(EVALUATION_SPLITS),
    progress: bool = True,
) -> dict[str, dict[str, dict[str, float]]]:
    """``evaluate_generation`` on each of ``splits`` (labels of ``EVALUATION_SPLITS``) into
    ``out_dir/<label>/``; returns ``{label: {task: {metric: value}}}``. The quickstart scores its model
    with this, and ``skyreels-v4 evaluate`` rescores a saved model folder with other sampling settings
    (the same seed gives the same clips and noise, so equal settings reproduce the quickstart's numbers).
    """
    unknown = [label for label in splits if label not in EVALUATION_SPLITS]
    if unknown or not splits:
        raise ValueError(f"splits: expected some of {list(EVALUATION_SPLITS)}, got {list(splits)!r}")
    known = ("t2av", "v2a")
    if not tasks or any(task not in known for task in tasks):
        raise ValueError(f"tasks: expected some of {list(known)}, got {list(tasks)!r}")
    return {
        label: evaluate_generation(
            pipeline,
            world=world,
            out_dir=Path(out_dir) / label,
            num_clips=num_clips,
            seed=seed,
            tasks=tasks,
            split=EVALUATION_SPLITS[label],
            sampling=sampling,
            progress=progress,
        )
        for label in splits
    }


#: The evaluation clips' seed is the run's seed plus this (the training clips use the seed itself).
EVALUATION_SEED_OFFSET = 1_000

_SPLIT_TITLES = {
    "seen_pairs": "New clips, colour-shape pairs seen in training",
    "heldout_pairs": "Held-out colour-shape pairs",
}


def splits_report(out_dir: str | os.PathLike[str], results: dict[str, Any], num_clips: int) -> str:
    """The markdown sections of an ``evaluate_splits`` run (one per split, from its ``metrics.md``),
    with the column legend."""
    sections = []
    for label in results:
        split = EVALUATION_SPLITS[label]
        title = f"{_SPLIT_TITLES[label]} ({num_clips} clips" + (
            ", `WorldSplit.HELDOUT`)" if split is WorldSplit.HELDOUT else ")"
        )
        body = (Path(out_dir) / label / "metrics.md").read_text(encoding="utf-8")
        sections.append(f"## {title}\n\n{body}")
    legend = (
        "Columns: colour / shape / object adherence and pitch accuracy of the prompt's objects; sync "
        "recall of wall hits by audio onsets, its chance level (mismatched pairs) and the gain over chance "
        "(docs/metrics.md). `ground_truth` rows are the rendered clips: the ceiling.\n"
    )
    return "\n".join(sections) + "\n" + legend


def json_ready(value: object) -> object:
    """``value`` (nested dicts of numbers) with every NaN / inf replaced by None, for JSON (a score that
    cannot be computed, e.g. a sync recall with no bounces, is NaN in Python and null in the file)."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_TABLE = (
    ("adherence/colour_accuracy", "colour"),
    ("adherence/shape_accuracy", "shape"),
    ("adherence/object_accuracy", "object"),
    ("pitch/tone_accuracy", "pitch"),
    ("sync/recall", "sync recall"),
    ("sync/chance_recall", "chance recall"),
    ("sync/recall_gain", "recall gain"),
    ("sync/f1_gain", "F1 gain"),
)


def _markdown(results: dict[str, dict[str, float]]) -> str:
    def table(columns: Sequence[tuple[str, str]], rows: dict[str, dict[str, float]]) -> list[str]:
        lines = ["| clips | " + " | ".join(label for _, label in columns) + " |"]
        lines.append("|---" * (len(columns) + 1) + "|")
        for name, row in rows.items():
            cells = []
            for key, _ in columns:
                value = row.get(key)
                if value is None or not math.isfinite(value):
                    cells.append("-")
                else:
                    cells.append(f"{value:.0f}" if key.startswith("sync/num_") else f"{value:.3f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return lines

    lines = table(_TABLE, results)
    timed = {name: row for name, row in results.items() if "sync/num_onsets" in row}
    if timed:
        columns = [("sync/num_bounces", "bounces"), ("sync/num_onsets", "onsets")]
        columns += [("audio/band_activity", "sounding")]
        columns += [("sync/recall_gain", "gain 1f")]
        columns += [(f"sync@{f}f/recall_gain", f"gain {f}f") for f in WIDER_SYNC_TOLERANCES]
        lines += [
            "",
            "Sync recall gain at wider tolerances (video frames); bounces and onsets scored; `sounding`: "
            "the share of 1 ms frames whose blip-band amplitude exceeds a tenth of the clip's peak "
            "(`band_activity`, mean over clips: blips on silence score low, a sound that never stops 1):",
            "",
        ]
        lines += table(columns, timed)
    return "\n".join(lines) + "\n"


def write_generation_montage(
    path: str | os.PathLike[str], items: Sequence[dict], generated: dict[str, list[Any]], world: WorldConfig
) -> None:
    """One row per clip: ground-truth frames, then each task's frames, then the waveforms."""
    frames_per = 5
    picks = np.linspace(0, world.num_frames - 1, frames_per).round().astype(int)
    rows = len(items)
    columns = ["ground truth", *[k for k in generated if generated[k][0].video is not None]]
    figure = Figure(figsize=(1.1 * frames_per * len(columns) + 3.5, 1.35 * rows + 0.6), dpi=100)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(
        rows, frames_per * len(columns) + 1, width_ratios=[1] * frames_per * len(columns) + [3]
    )
    for row, item in enumerate(items):
        sources = [item["video"]] + [generated[k][row].video for k in columns[1:]]
        for c, video in enumerate(sources):
            pixels = ((video.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()
            for j, f in enumerate(picks):
                ax = figure.add_subplot(grid[row, c * frames_per + j])
                ax.imshow(pixels[f], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0 and j == 0:
                    ax.set_title(columns[c], fontsize=7, loc="left")
        ax = figure.add_subplot(grid[row, -1])
        t = np.arange(item["audio"].shape[-1]) / world.sample_rate
        ax.plot(t, item["audio"][0].numpy(), lw=0.4, color="0.4", label="ground truth")
        for k, outputs in generated.items():
            if outputs[row].audio is not None:
                wave = outputs[row].audio[0].numpy()
                ax.plot(np.arange(wave.shape[-1]) / world.sample_rate, wave, lw=0.4, alpha=0.8, label=k)
        ax.set_yticks([])
        ax.tick_params(labelsize=6)
        if row == 0:
            ax.legend(fontsize=5, loc="upper right")
    with atomic_path(path, ".png") as temp:
        figure.savefig(temp, format="png")


def write_sync_timeline(
    path: str | os.PathLike[str],
    clips: dict[str, Sequence[tuple[torch.Tensor, torch.Tensor]]],
    world: WorldConfig,
) -> None:
    """One column per source (``{"ground truth": [(video, audio), ...], "v2a": ...}``), one row per clip:
    the audio's spectrogram with the bounces the sync metric finds in the video (cyan, solid) and the
    onsets it finds in the audio (green, dashed). Video ``[3, F, H, W]`` and audio ``[C, S]`` in
    ``[-1, 1]``. A blip heard on time has a dashed line on a solid one."""
    columns = list(clips)
    rows = max(len(v) for v in clips.values())
    figure = Figure(figsize=(4.2 * len(columns), 1.5 * rows + 0.5), dpi=100)
    FigureCanvasAgg(figure)
    config = SyncConfig(fps=world.fps, sample_rate=world.sample_rate)
    for c, name in enumerate(columns):
        for r, (video, audio) in enumerate(clips[name]):
            sync = AudioVideoSync(config)
            sync.update(video[None].clamp(-1, 1), audio[None].clamp(-1, 1))
            (bounces,), (onsets,), _ = sync.clip_events()
            ax = figure.add_subplot(rows, len(columns), r * len(columns) + c + 1)
            wave = audio.mean(dim=0).double().numpy()
            power, freqs, _ = mlab.specgram(wave, NFFT=256, Fs=world.sample_rate, noverlap=192)
            decibels = 10 * np.log10(power + 1e-12)  # a floor: exact silence would be -inf (blank)
            extent = (0.0, len(wave) / world.sample_rate, float(freqs[0]), float(freqs[-1]))
            ax.imshow(decibels, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=-120)
            for t in bounces:
                ax.axvline(float(t), color="cyan", lw=1.4)
            for t in onsets:
                ax.axvline(float(t), color="lime", lw=0.8, ls="--")
            ax.set_ylim(0, min(4000, world.sample_rate / 2))
            ax.tick_params(labelsize=6)
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{name}: bounces (cyan) / onsets (green)", fontsize=7, loc="left")
    figure.tight_layout()
    with atomic_path(path, ".png") as temp:
        figure.savefig(temp, format="png")


def plot_loss_curves(
    metrics_csv: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], path: str | os.PathLike[str]
) -> None:
    """Training (and validation) loss curves from Lightning CSVLogger ``metrics.csv`` files.

    Several files (one per resumed session, in order) are joined; a later file's value for a step replaces
    an earlier one's. Missing files are skipped; with no rows at all the picture says so.
    """
    import csv

    files = [metrics_csv] if isinstance(metrics_csv, (str, os.PathLike)) else list(metrics_csv)
    values: dict[str, dict[int, float]] = {}
    for name in files:
        if not os.path.exists(name):
            continue
        with open(name, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    if key and key.endswith("loss") and value not in ("", None):
                        values.setdefault(key, {})[int(row["step"])] = float(value)
    steps = {key: sorted(points.items()) for key, points in values.items()}
    figure = Figure(figsize=(6, 3.5), dpi=110)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    if not steps:
        ax.text(0.5, 0.5, "no loss values logged yet", ha="center", va="center")
    for key in sorted(steps):
        xs, ys = zip(*steps[key])
        ax.plot(xs, ys, lw=1, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if steps:
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path, ".png") as temp:
        figure.savefig(temp, format="png")
