"""A montage PNG of clips: a strip of frames and the audio envelope with the wall hits marked.

Drawn with matplotlib's object API (no pyplot global state) and written atomically.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from skyreels_v4.world.clip import WorldClip
from skyreels_v4.world.media import atomic_path

_ENVELOPE_S = 0.005


def audio_envelope(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Peak envelope of ``audio [C, S]`` in 5 ms bins: ``(times [T] s, peaks [T])``."""
    width = max(round(_ENVELOPE_S * sample_rate), 1)
    mono = np.abs(audio).max(axis=0)
    bins = mono.size // width
    peaks = mono[: bins * width].reshape(bins, width).max(axis=1)
    return (np.arange(bins) + 0.5) * width / sample_rate, peaks


def write_montage(path: str | os.PathLike, clips: Sequence[WorldClip], frames_per_clip: int = 6) -> None:
    """One row per clip: ``frames_per_clip`` evenly spaced frames, then the audio envelope with
    each wall hit as a tick in its object's colour (dashed: a corner hit that did not sound)."""
    if not clips:
        raise ValueError("clips: expected at least one clip, got none")
    if frames_per_clip < 1:
        raise ValueError(f"frames_per_clip: expected >= 1, got {frames_per_clip}")
    rows = len(clips)
    height = 1.6 * rows + 0.5
    figure = Figure(figsize=(1.2 * frames_per_clip + 4.2, height), dpi=100)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(rows, frames_per_clip + 1, width_ratios=[1] * frames_per_clip + [3.4])
    for row, clip in enumerate(clips):
        config = clip.config
        picks = np.linspace(0, config.num_frames - 1, frames_per_clip).round().astype(int)
        for col, frame_index in enumerate(picks):
            ax = figure.add_subplot(grid[row, col])
            ax.imshow(clip.frames[frame_index], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"t={frame_index / config.fps:.2f}s", fontsize=6, labelpad=1)
            if col == 0:
                # The caption spans the row, starting above the first frame.
                ax.set_title("\n".join(textwrap.wrap(clip.caption, 160)), fontsize=6, loc="left")
        ax = figure.add_subplot(grid[row, frames_per_clip])
        times, peaks = audio_envelope(clip.audio, config.sample_rate)
        ax.set_facecolor("0.18")  # dark, so that white and yellow ticks stay visible
        ax.fill_between(times, 0, peaks, color="0.8", linewidth=0)
        for t, n, sounded in zip(clip.truth.hit_times, clip.truth.hit_objects, clip.truth.hit_sounded):
            rgb = np.asarray(clip.scene.objects[n].colour.rgb) / 255.0
            ax.axvline(t, ymin=0.85, ymax=1.0, color=rgb, linewidth=1.6, linestyle="-" if sounded else ":")
        ax.set_xlim(0, config.duration_s)
        ax.set_ylim(0, max(0.4, 1.1 * float(peaks.max(initial=0.0))))
        ax.yaxis.tick_right()
        ax.tick_params(labelsize=6, pad=1)
        if row == rows - 1:
            ax.set_xlabel("time (s); peak envelope, ticks = wall hits", fontsize=6, labelpad=1)
    figure.subplots_adjust(
        left=0.01, right=0.965, top=1 - 0.3 / height, bottom=0.35 / height, hspace=0.55, wspace=0.08
    )
    with atomic_path(path, ".png") as temp:
        figure.savefig(temp, format="png")
