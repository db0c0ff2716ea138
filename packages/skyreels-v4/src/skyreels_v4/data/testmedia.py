"""Synthetic media with known truth, for the pipeline's tests, benchmark and decisions table.

:func:`write_video_set` writes silent test-pattern videos (hard cuts, a fade, a static shot, a
shaky shot, a duplicated clip, a blurred clip, an underexposed clip, dropped frames) and
procedural-world clips (:mod:`skyreels_v4.world`) whose audio is shifted by known frame offsets.
:func:`write_audio_set` writes tones, noise, silence, clipped and quiet audio and, when
``espeak-ng`` is installed, speech. Each returns the truth as ``{file stem: {...}}``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from skyreels_v4.world.media import write_mp4, write_wav

__all__ = ["pan_texture", "world_clip_with_offset", "write_audio_set", "write_video_set"]

FPS = 24.0
SIZE = (64, 96)  # H, W


def _texture(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth, colourful random texture ``[H, W, 3]`` uint8 (sharp enough to pass the blur test)."""
    import cv2

    rng = np.random.default_rng(seed)
    base = rng.random((height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    smooth = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
    detail = rng.random((height, width, 1)).astype(np.float32) * 0.35
    return (np.clip(smooth * 0.75 + detail, 0, 1) * 255).astype(np.uint8)


def pan_texture(seed: int, frames: int, *, speed: float = 1.0, jitter: float = 0.0, size=SIZE) -> np.ndarray:
    """A camera panning over a texture: ``[F, H, W, 3]`` uint8. ``jitter`` adds random shake (px)."""
    height, width = size
    margin = int(abs(speed) * frames + 4 * jitter + 8)
    texture = _texture(seed, height + 2 * margin, width + 2 * margin)
    rng = np.random.default_rng(seed + 1)
    out = np.empty((frames, height, width, 3), np.uint8)
    for f in range(frames):
        dx = round(margin + speed * f - (speed * frames) / 2 + rng.normal(0, jitter))
        dy = round(margin + rng.normal(0, jitter))
        dx = int(np.clip(dx, 0, 2 * margin))
        dy = int(np.clip(dy, 0, 2 * margin))
        out[f] = texture[dy : dy + height, dx : dx + width]
    return out


def world_clip_with_offset(
    index: int, offset_frames: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, Any]:
    """A procedural-world clip whose audio is delayed by ``offset_frames`` video frames
    (negative: audio early); the shifted-in part is silence. Returns (frames, audio, config)."""
    from skyreels_v4.world import WorldConfig, make_clip

    config = WorldConfig(size=64, fps=16.0, num_frames=81, sample_rate=16000)
    clip = make_clip(config, seed=seed, index=index)
    shift = round(offset_frames * config.sample_rate / config.fps)
    audio = np.zeros_like(clip.audio)
    if shift >= 0:
        audio[:, shift:] = clip.audio[:, : audio.shape[1] - shift]
    else:
        audio[:, :shift] = clip.audio[:, -shift:]
    return clip.frames, audio, config


def write_video_set(
    folder: str | Path, *, world_offsets: tuple[int, ...] = (0, 0, 2, -2, 8, -10)
) -> dict[str, dict]:
    """Write the test videos into ``folder``; return the truth per file stem."""
    import cv2

    folder = Path(folder)
    truth: dict[str, dict] = {}

    # hard cuts at frames 24 and 48 between three panning shots
    shots = [pan_texture(s, 24, speed=1.0) for s in (11, 12, 13)]
    write_mp4(folder / "cuts.mp4", np.concatenate(shots), FPS)
    for stem in (
        "cuts",
        "fade",
        "static",
        "shaky",
        "steady",
        "steady_copy",
        "blurry",
        "dark",
        "dropped_frames",
    ):
        _write_sidecar(folder / f"{stem}.json", f"A camera pans over a colourful texture ({stem}).")
    truth["cuts"] = {"cut_frames": [24, 48], "kind": "hard cuts"}

    # a fade to black (frames 24..35) and back in from a new shot (36..47)
    a, b = pan_texture(21, 36, speed=1.0), pan_texture(22, 36, speed=1.0)
    ramp = np.linspace(1, 0, 12)[:, None, None, None]
    a[24:] = (a[24:] * ramp).astype(np.uint8)
    b[:12] = (b[:12] * ramp[::-1]).astype(np.uint8)
    write_mp4(folder / "fade.mp4", np.concatenate([a, b]), FPS)
    truth["fade"] = {"cut_frames": [36], "kind": "fade out/in (12 + 12 frames)"}

    texture = pan_texture(31, 1)[0]
    write_mp4(folder / "static.mp4", np.repeat(texture[None], 48, axis=0), FPS)
    truth["static"] = {"drop": "motion", "kind": "static shot"}

    write_mp4(folder / "shaky.mp4", pan_texture(41, 48, speed=0.5, jitter=3.0), FPS)
    truth["shaky"] = {"drop": "motion", "kind": "shaky hand-held shot"}

    steady = pan_texture(51, 48, speed=1.0)
    write_mp4(folder / "steady.mp4", steady, FPS)
    write_mp4(folder / "steady_copy.mp4", steady, FPS, crf=30)  # a re-encoded duplicate
    truth["steady"] = {"keep": True, "kind": "steady pan"}
    truth["steady_copy"] = {"drop": "dedup", "kind": "duplicate of steady (re-encoded)"}

    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 4.0) for f in pan_texture(61, 48, speed=1.0)])
    write_mp4(folder / "blurry.mp4", blurred, FPS)
    truth["blurry"] = {"drop": "video_quality", "kind": "Gaussian blur sigma 4"}

    dark = (pan_texture(71, 48, speed=1.0) * 0.08).astype(np.uint8)
    write_mp4(folder / "dark.mp4", dark, FPS)
    truth["dark"] = {"drop": "video_quality", "kind": "underexposed (8% brightness)"}

    moving = pan_texture(81, 48, speed=3.0)
    for f in range(4, 48, 6):
        moving[f] = moving[f - 1]  # the frame was lost and its predecessor repeated
    write_mp4(folder / "dropped_frames.mp4", moving, FPS)
    truth["dropped_frames"] = {"drop": "motion", "kind": "every 6th frame repeated"}

    for n, offset in enumerate(world_offsets):
        frames, audio, config = world_clip_with_offset(n, offset)
        name = f"world{n}_offset{offset:+d}"
        write_mp4(folder / f"{name}.mp4", frames, config.fps, audio, config.sample_rate)
        _write_sidecar(folder / f"{name}.json", caption_of_world(n))
        truth[name] = {
            "offset_frames": offset,
            "drop": "sync" if abs(offset) > 3 else None,
            "kind": f"world clip, audio shifted {offset:+d} frames",
        }
    return truth


def caption_of_world(index: int, *, seed: int = 0) -> str:
    from skyreels_v4.world import WorldConfig, make_clip

    return make_clip(
        WorldConfig(size=64, fps=16.0, num_frames=81, sample_rate=16000), seed=seed, index=index
    ).caption


def _write_sidecar(path: Path, structured: str) -> None:
    """A caption sidecar (:class:`~skyreels_v4.data.hooks.SidecarCaptioner`) from a structured caption."""
    import json
    import re

    from skyreels_v4.io import atomic_write_text

    visual = structured.split("<", 1)[0].strip()
    data = {"short": visual, "visual": visual}
    data.update({tag: text for tag, text in re.findall(r"<(\w+)>(.*?)</\1>", structured)})
    atomic_write_text(path, json.dumps(data))


def _espeak(text: str, path: Path) -> bool:
    if shutil.which("espeak-ng") is None:
        return False
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return True


def write_audio_set(folder: str | Path, *, sample_rate: int = 16000, seconds: float = 4.0) -> dict[str, dict]:
    """Write the test audio (wav) into ``folder``; return the truth per file stem."""
    import soundfile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    truth: dict[str, dict] = {}
    write_wav(folder / "tone.wav", (0.3 * chord)[None].astype(np.float32), sample_rate)
    truth["tone"] = {"keep": True, "category": "music", "kind": "A-major chord, -13 dBFS"}
    write_wav(
        folder / "noise.wav",
        (0.2 * rng.standard_normal(t.size)).clip(-1, 1)[None].astype(np.float32),
        sample_rate,
    )
    truth["noise"] = {"drop": "snr", "kind": "white noise"}
    write_wav(folder / "silence.wav", np.zeros((1, t.size), np.float32), sample_rate)
    truth["silence"] = {"drop": "volume", "kind": "digital silence"}
    write_wav(folder / "quiet.wav", (0.0003 * chord)[None].astype(np.float32), sample_rate)
    truth["quiet"] = {"drop": "volume", "kind": "chord at -78 dBFS"}
    write_wav(folder / "clipped.wav", np.clip(3.0 * chord, -1, 1)[None].astype(np.float32), sample_rate)
    truth["clipped"] = {"drop": "clipping", "kind": "chord driven 3x into clipping"}
    speech = folder / "speech.wav"
    if _espeak(
        "The quick brown fox jumps over the lazy dog. Data pipelines keep only clean clips, "
        "and every dropped clip says why it was dropped.",
        speech,
    ):
        data, rate = soundfile.read(speech, dtype="float32")
        truth["speech"] = {"keep": True, "category": "speech", "kind": f"espeak-ng, {len(data) / rate:.1f} s"}
        gappy = np.concatenate([data, np.zeros(int(rate * 3 * len(data) / rate), np.float32)])
        soundfile.write(folder / "speech_gaps.wav", gappy, rate)
        truth["speech_gaps"] = {"drop": "vad", "category": "speech", "kind": "speech then 75% silence"}
    return truth
