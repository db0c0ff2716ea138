"""Putting audio tokens and video latents on one time axis (paper section 3.1, "RoPE scaling").

The video branch sees ``T_v`` latent frames (causal VAE, ``T_v = 1 + (F - 1) / 4``); the audio branch
sees ``T_a`` audio latents for the same clip (44.1 kHz, hop 1024). Three selectable policies
(:class:`AudioTimeAlignment`) assign audio positions so that an audio token and a video latent at the
same instant get the same temporal rotary phase:

- ``RATIO`` (the paper): audio token k at ``k * T_v / T_a``, video latent j at ``j``. The ratio comes
  from the clip (21/218 for 81 frames at 16 fps), never a constant; an audio reference placed before
  the clip uses the clip's ratio too (``clip_num_audio_tokens`` of :func:`audio_positions`).
- ``SECONDS`` (LTX-2 style): every token at its real time, for any clip length; audio token k at
  ``k / audio_tokens_per_second``; video latent times from fps and the causal VAE
  (:func:`video_latent_times`). Optionally expressed in video-latent units instead of seconds.
- ``TEMPORAL_CHANNELS_ONLY`` (Ovi style): ``RATIO`` times, but audio uses the video's axis split and
  its positions are ``(t, 0, 0)``, so only the temporal channel pairs rotate (the spatial pairs get
  angle 0: cos 1, sin 0, i.e. they pass through unrotated).
"""

from __future__ import annotations

import math
from enum import Enum

import torch
from torch import Tensor

from skyreels_av_rope.rotary import RotaryConfig
from skyreels_av_rope.video_positions import grid_positions_from_axes

__all__ = [
    "AudioTimeAlignment",
    "VideoLatentTimestamp",
    "audio_positions",
    "audio_rotary_config",
    "num_video_latents",
    "temporal_ratio",
    "video_latent_times",
    "video_seconds_positions",
]


class AudioTimeAlignment(str, Enum):
    """How audio token positions relate to video latent positions (see the module docstring)."""

    RATIO = "ratio"
    SECONDS = "seconds"
    TEMPORAL_CHANNELS_ONLY = "temporal_channels_only"


class VideoLatentTimestamp(str, Enum):
    """Which instant a causal-VAE latent frame stands for (latent 0 = frame 0; latent i>0 = frames 4i-3..4i).

    - ``LAST_FRAME`` (default): time of its last frame, ``c * i / fps`` (c = temporal compression).
      Evenly spaced, so in units of ``fps / c`` latents per second the positions are exactly the
      integer grid ``0..T-1`` the pretrained video model uses.
    - ``FIRST_FRAME``: time of its first frame, ``max(c * i - (c - 1), 0) / fps`` (0, 1, 5, 9, ...
      frames for c = 4; uneven between latents 0 and 1).
    - ``MIDDLE``: mean time of its frames, ``0`` for latent 0 and ``(c * i - (c - 1) / 2) / fps`` after.
    """

    LAST_FRAME = "last_frame"
    FIRST_FRAME = "first_frame"
    MIDDLE = "middle"


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def _positive_real(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return float(value)


def _finite_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def num_video_latents(num_frames: int, *, temporal_compression: int = 4) -> int:
    """Latent frames of a causal video VAE: ``1 + (F - 1) / c`` (81 frames -> 21 for c = 4).

    Raises ValueError unless ``(F - 1)`` is divisible by ``c`` (the VAE would pad or drop frames).
    """
    num_frames = _positive_int("num_frames", num_frames)
    c = _positive_int("temporal_compression", temporal_compression)
    if (num_frames - 1) % c != 0:
        raise ValueError(
            f"num_frames: expected 1 + {c}k frames for a causal VAE with temporal_compression={c}, "
            f"got {num_frames}"
        )
    return 1 + (num_frames - 1) // c


def temporal_ratio(num_video_latents: int, num_audio_tokens: int) -> float:
    """``T_v / T_a`` for one clip: the factor on audio positions under ``RATIO`` (21/218 in the paper)."""
    return _positive_int("num_video_latents", num_video_latents) / _positive_int(
        "num_audio_tokens", num_audio_tokens
    )


def video_latent_times(
    num_video_latents: int,
    *,
    fps: float,
    temporal_compression: int = 4,
    timestamp: VideoLatentTimestamp = VideoLatentTimestamp.LAST_FRAME,
    device: torch.device | str | None = None,
) -> Tensor:
    """Time in seconds of each causal-VAE latent frame (see :class:`VideoLatentTimestamp`).

    Returns:
        float32 ``[num_video_latents]``, starting at 0 for latent 0.
    """
    n = _positive_int("num_video_latents", num_video_latents)
    fps = _positive_real("fps", fps)
    c = _positive_int("temporal_compression", temporal_compression)
    if not isinstance(timestamp, VideoLatentTimestamp):
        raise TypeError(f"timestamp: expected a VideoLatentTimestamp, got {timestamp!r}")
    i = torch.arange(n, dtype=torch.float64, device=device)
    if timestamp is VideoLatentTimestamp.LAST_FRAME:
        frame = c * i
    elif timestamp is VideoLatentTimestamp.FIRST_FRAME:
        frame = (c * i - (c - 1)).clamp(min=0)
    else:
        frame = torch.where(i == 0, i, c * i - (c - 1) / 2)
    return (frame / fps).to(torch.float32)


def video_seconds_positions(
    t: int,
    h: int,
    w: int,
    *,
    fps: float,
    temporal_compression: int = 4,
    timestamp: VideoLatentTimestamp = VideoLatentTimestamp.LAST_FRAME,
    video_latents_per_second: float | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Video grid positions for the ``SECONDS`` policy: ``(time, j, k)`` with time from fps.

    The temporal column is :func:`video_latent_times` in seconds, or in video-latent units
    (``seconds * video_latents_per_second``) when that is given; pass the same value to
    :func:`audio_positions`. With ``LAST_FRAME`` and ``video_latents_per_second = fps / c`` the result
    equals :func:`video_grid_positions` (the pretrained model's integer grid).

    Returns:
        float32 ``[t * h * w, 3]``, t-major.
    """
    scale = (
        1.0
        if video_latents_per_second is None
        else _positive_real("video_latents_per_second", video_latents_per_second)
    )
    times = video_latent_times(
        t, fps=fps, temporal_compression=temporal_compression, timestamp=timestamp, device=device
    )
    h, w = _positive_int("h", h), _positive_int("w", w)
    arange = lambda n: torch.arange(n, dtype=torch.float32, device=device)  # noqa: E731
    return grid_positions_from_axes((times.double() * scale).float(), arange(h), arange(w))


def audio_positions(
    num_audio_tokens: int,
    *,
    alignment: AudioTimeAlignment,
    num_video_latents: int | None = None,
    audio_tokens_per_second: float | None = None,
    video_latents_per_second: float | None = None,
    clip_num_audio_tokens: int | None = None,
    t_offset: float = 0.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Positions of ``num_audio_tokens`` consecutive audio latents (token k starts at sample ``k * hop``).

    Per policy (arguments a policy does not use must stay ``None``):

    - ``RATIO``: needs ``num_video_latents`` (T_v of the clip); ``t_k = k * T_v / T_a`` where
      ``T_a = clip_num_audio_tokens`` (the clip's audio token count; default: ``num_audio_tokens``,
      i.e. these tokens *are* the clip).
    - ``SECONDS``: needs ``audio_tokens_per_second`` (``sample_rate / hop``, 44100/1024 = 43.07);
      ``t_k = k / audio_tokens_per_second`` seconds, times ``video_latents_per_second`` if given
      (use the same value in :func:`video_seconds_positions`).
    - ``TEMPORAL_CHANNELS_ONLY``: ``RATIO`` times as ``(t_k, 0, 0)`` for the video's axis split.

    ``t_offset`` is added to every temporal position, in the policy's units.

    Placing an in-context audio reference of ``R`` tokens just before a clip of ``T_v`` video latents
    and ``T_a`` audio tokens (eq. 8): the reference must be spaced like the clip's audio, so pass the
    clip's counts, not the reference's::

        r = temporal_ratio(T_v, T_a)
        audio_positions(R, alignment=RATIO, num_video_latents=T_v, clip_num_audio_tokens=T_a,
                        t_offset=-R * r)          # t_k = (k - R) * T_v / T_a, k = 0 .. R-1

    Under ``SECONDS`` the spacing depends on no token count: ``t_offset = -R / audio_tokens_per_second``
    (times ``video_latents_per_second`` if given).

    Raises:
        ValueError: a count is not a positive int, an argument the policy needs is missing or one it
            does not use is given, ``t_offset`` is not finite.

    Returns:
        float32 ``[num_audio_tokens, 1]`` for ``RATIO`` and ``SECONDS`` (use with
        :func:`audio_rotary_config`), ``[num_audio_tokens, 3]`` for ``TEMPORAL_CHANNELS_ONLY``.
    """
    n = _positive_int("num_audio_tokens", num_audio_tokens)
    if not isinstance(alignment, AudioTimeAlignment):
        raise TypeError(f"alignment: expected an AudioTimeAlignment, got {alignment!r}")
    t_offset = _finite_real("t_offset", t_offset)
    k = torch.arange(n, dtype=torch.float64, device=device)
    if alignment is AudioTimeAlignment.SECONDS:
        for name, value in (
            ("num_video_latents", num_video_latents),
            ("clip_num_audio_tokens", clip_num_audio_tokens),
        ):
            if value is not None:
                raise ValueError(f"{name}: not used by alignment=SECONDS, got {value!r}")
        if audio_tokens_per_second is None:
            raise ValueError("audio_tokens_per_second: required by alignment=SECONDS, got None")
        rate = _positive_real("audio_tokens_per_second", audio_tokens_per_second)
        scale = 1.0
        if video_latents_per_second is not None:
            scale = _positive_real("video_latents_per_second", video_latents_per_second)
        times = k / rate * scale
    else:
        for name, value in (
            ("audio_tokens_per_second", audio_tokens_per_second),
            ("video_latents_per_second", video_latents_per_second),
        ):
            if value is not None:
                raise ValueError(f"{name}: not used by alignment={alignment.name}, got {value!r}")
        if num_video_latents is None:
            raise ValueError(f"num_video_latents: required by alignment={alignment.name}, got None")
        clip_audio = (
            n
            if clip_num_audio_tokens is None
            else _positive_int("clip_num_audio_tokens", clip_num_audio_tokens)
        )
        # Paper section 3.1: audio RoPE scaled by T_v / T_a (21/218) onto the video's latent time axis;
        # T_a is the clip's count, also for a reference placed before the clip.
        times = k * temporal_ratio(num_video_latents, clip_audio)
    times = (times + t_offset).to(torch.float32)[:, None]
    if alignment is AudioTimeAlignment.TEMPORAL_CHANNELS_ONLY:
        return torch.cat((times, times.new_zeros(n, 2)), dim=1)
    return times


def audio_rotary_config(alignment: AudioTimeAlignment, video_config: RotaryConfig) -> RotaryConfig:
    """The audio branch's RoPE for a policy, matching the video branch's head dim and theta.

    ``RATIO`` / ``SECONDS``: one time axis over the whole head dim, ``axes_dims=(D,)``.
    ``TEMPORAL_CHANNELS_ONLY``: the video's own split (positions ``(t, 0, 0)`` rotate only the first
    axis' channels).
    """
    if not isinstance(alignment, AudioTimeAlignment):
        raise TypeError(f"alignment: expected an AudioTimeAlignment, got {alignment!r}")
    if not isinstance(video_config, RotaryConfig):
        raise TypeError(f"video_config: expected a RotaryConfig, got {type(video_config).__name__}")
    if alignment is AudioTimeAlignment.TEMPORAL_CHANNELS_ONLY:
        return video_config
    return RotaryConfig(axes_dims=(video_config.head_dim,), theta=video_config.theta)
