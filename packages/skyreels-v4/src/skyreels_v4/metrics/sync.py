"""Audio-video synchronisation: do the blips happen when the objects bounce?

Per clip, the video gives bounce times ``V`` (:func:`detect_bounces` on :func:`track_clip`) and
the audio gives onset times ``A`` (:func:`detect_onsets`). Only events inside the evaluation
window ``[m, D - m]`` are scored (``D`` = clip duration, ``m = edge_margin_frames / fps``: a
reversal needs frames on both sides to be seen), but they may match events outside it. With
tolerance ``τ`` (default one video frame):

* recall ``= #{v ∈ V_win : min_a |a - v| <= τ} / |V_win|`` (bounces that are heard);
* precision ``= #{a ∈ A_win : min_v |v - a| <= τ} / |A_win|`` (blips that are seen);
* F1 ``= (#recalled bounces + #seen onsets) / (|V_win| + |A_win|)``, the events of either side
  that have a partner: the harmonic mean of recall and precision when matches are one-to-one,
  and 0 (not undefined) for silent audio;
* mean offset = mean of ``a* - v`` over recalled bounces (``a*`` the nearest onset; positive =
  audio late).

Counts are summed over all clips before dividing. *Chance* pairs the audio of clip ``i`` with
the video of clip ``i + 1 (mod n)`` over every clip seen since the last reset (a derangement:
no clip meets its own audio), so it measures what unrelated audio scores on this event density;
``*_gain`` = score - chance. Chance is NaN with fewer than two clips. Because per-clip events are
stored and scored in :meth:`compute`, results do not depend on how clips were batched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torchmetrics import Metric

from skyreels_v4.metrics.bounces import BounceConfig, detect_bounces
from skyreels_v4.metrics.events import nearest_offsets
from skyreels_v4.metrics.inputs import check_audio, check_batch, check_video
from skyreels_v4.metrics.onsets import OnsetConfig, detect_onsets
from skyreels_v4.metrics.tracking import TrackingConfig, track_clip


@dataclass(frozen=True, kw_only=True)
class SyncConfig:
    """Synchronisation settings. ``fps`` and ``sample_rate`` describe the inputs."""

    fps: float
    sample_rate: int
    tolerance_s: float | None = None
    edge_margin_frames: int = 3
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    bounces: BounceConfig = field(default_factory=BounceConfig)
    onsets: OnsetConfig = field(default_factory=OnsetConfig)

    def __post_init__(self) -> None:
        checks = (
            ("fps", self.fps > 0, "> 0"),
            ("sample_rate", isinstance(self.sample_rate, int) and self.sample_rate > 0, "a positive int"),
            ("tolerance_s", self.tolerance_s is None or self.tolerance_s > 0, "None or > 0"),
            (
                "edge_margin_frames",
                isinstance(self.edge_margin_frames, int) and self.edge_margin_frames >= 0,
                "int >= 0",
            ),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"SyncConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

    @property
    def tolerance(self) -> float:
        """Matching tolerance in seconds (one video frame unless set)."""
        return 1.0 / self.fps if self.tolerance_s is None else self.tolerance_s


@dataclass(frozen=True, kw_only=True)
class _Tally:
    seen: int = 0
    recalled: int = 0
    heard: int = 0
    precise: int = 0
    offset_sum: float = 0.0

    def add(self, video: np.ndarray, audio: np.ndarray, duration: float, config: SyncConfig) -> _Tally:
        margin = config.edge_margin_frames / config.fps
        v_win = video[(video >= margin) & (video <= duration - margin)]
        a_win = audio[(audio >= margin) & (audio <= duration - margin)]
        to_audio = nearest_offsets(v_win, audio)
        to_video = nearest_offsets(a_win, video)
        hit = np.abs(to_audio) <= config.tolerance
        return _Tally(
            seen=self.seen + v_win.size,
            recalled=self.recalled + int(hit.sum()),
            heard=self.heard + a_win.size,
            precise=self.precise + int((np.abs(to_video) <= config.tolerance).sum()),
            offset_sum=self.offset_sum + float(to_audio[hit].sum()),
        )

    def scores(self) -> dict[str, float]:
        recall = self.recalled / self.seen if self.seen else math.nan
        precision = self.precise / self.heard if self.heard else math.nan
        # Events of either side that have a partner: the harmonic mean of recall and precision
        # when matches are one-to-one, and still defined when one side has no events (silence).
        events = self.seen + self.heard
        f1 = (self.recalled + self.precise) / events if events else math.nan
        offset = self.offset_sum / self.recalled if self.recalled else math.nan
        return {"recall": recall, "precision": precision, "f1": f1, "mean_offset_s": offset}


class AudioVideoSync(Metric):
    """Bounce/blip synchronisation with its chance level (see the module docstring).

    ``update(video [B, 3, F, H, W] in [-1, 1], audio [B, C, S] in [-1, 1])``; the video lasts
    ``F / fps`` and the audio ``S / sample_rate`` seconds, which must agree within one frame.
    ``compute()`` returns 0-d float64 tensors: ``recall``, ``precision``, ``f1``,
    ``mean_offset_s``, ``chance_recall``, ``chance_precision``, ``chance_f1``, ``recall_gain``,
    ``precision_gain``, ``f1_gain``, ``num_clips``, ``num_bounces``, ``num_onsets``.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, config: SyncConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(config, SyncConfig):
            raise TypeError(f"config: expected a SyncConfig, got {type(config).__name__}")
        self.config = config
        for name in ("bounce_times", "bounce_counts", "onset_times", "onset_counts", "durations"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, video: torch.Tensor, audio: torch.Tensor) -> None:
        video = check_video(video)
        audio = check_audio(audio)
        check_batch(video.shape[0], audio=audio)
        duration = video.shape[2] / self.config.fps
        audio_duration = audio.shape[2] / self.config.sample_rate
        if abs(audio_duration - duration) > 1.0 / self.config.fps:
            raise ValueError(
                f"audio: expected {duration:.4f} s ({video.shape[2]} frames at {self.config.fps} fps) "
                f"within one frame, got {audio_duration:.4f} s ({audio.shape[2]} samples at "
                f"{self.config.sample_rate} Hz)"
            )
        for b in range(video.shape[0]):
            tracks = track_clip(video[b], self.config.tracking)
            bounces = detect_bounces(tracks, self.config.fps, self.config.bounces)
            onsets = detect_onsets(audio[b], self.config.sample_rate, self.config.onsets)
            self.bounce_times.append(torch.from_numpy(bounces))
            self.bounce_counts.append(torch.tensor([bounces.size], dtype=torch.int64))
            self.onset_times.append(torch.from_numpy(onsets))
            self.onset_counts.append(torch.tensor([onsets.size], dtype=torch.int64))
            self.durations.append(torch.tensor([duration], dtype=torch.float64))

    def clip_events(self) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Per-clip ``(bounce times, onset times, durations)`` accumulated so far (seconds)."""
        counts_b = _cat(self.bounce_counts, torch.int64).tolist()
        counts_o = _cat(self.onset_counts, torch.int64).tolist()
        bounces = list(torch.split(_cat(self.bounce_times, torch.float64), counts_b))
        onsets = list(torch.split(_cat(self.onset_times, torch.float64), counts_o))
        durations = _cat(self.durations, torch.float64).numpy()
        return [b.numpy() for b in bounces], [o.numpy() for o in onsets], durations

    def compute(self) -> dict[str, torch.Tensor]:
        scores = self._scores(self.config)
        return {key: torch.tensor(value, dtype=torch.float64) for key, value in scores.items()}

    def scores_at(self, tolerance_s: float) -> dict[str, float]:
        """``compute()``'s scores (as floats) for the same clips matched at another tolerance, in
        seconds: how much of the sync is only a matter of precision."""
        if isinstance(tolerance_s, bool) or not isinstance(tolerance_s, (int, float)) or not tolerance_s > 0:
            raise ValueError(f"tolerance_s: expected seconds > 0, got {tolerance_s!r}")
        return self._scores(replace(self.config, tolerance_s=float(tolerance_s)))

    def _scores(self, config: SyncConfig) -> dict[str, float]:
        bounces, onsets, durations = self.clip_events()
        matched, chance = _Tally(), _Tally()
        n = len(bounces)
        for i in range(n):
            matched = matched.add(bounces[i], onsets[i], float(durations[i]), config)
            if n >= 2:
                j = (i + 1) % n
                chance = chance.add(bounces[j], onsets[i], float(min(durations[i], durations[j])), config)
        scores = matched.scores()
        chance_scores = chance.scores() if n >= 2 else dict.fromkeys(scores, math.nan)
        out = dict(scores)
        for key in ("recall", "precision", "f1"):
            out[f"chance_{key}"] = chance_scores[key]
            out[f"{key}_gain"] = scores[key] - chance_scores[key]
        out["num_clips"] = float(n)
        out["num_bounces"] = float(matched.seen)
        out["num_onsets"] = float(matched.heard)
        return out


def _cat(states: list[torch.Tensor] | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # After a distributed sync torchmetrics may hand back one concatenated tensor.
    if isinstance(states, torch.Tensor):
        return states.to(dtype).reshape(-1)
    if not states:
        return torch.zeros(0, dtype=dtype)
    return torch.cat([s.reshape(-1) for s in states]).to(dtype)
