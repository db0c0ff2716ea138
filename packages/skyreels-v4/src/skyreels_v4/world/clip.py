"""One rendered clip of the world: frames, waveform, caption, labels and ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skyreels_v4.world.captions import caption, label_ids
from skyreels_v4.world.config import WorldConfig
from skyreels_v4.world.physics import WorldTruth, simulate
from skyreels_v4.world.render_audio import render_audio
from skyreels_v4.world.render_video import render_frames
from skyreels_v4.world.scene import Scene, clip_rng, sample_scene
from skyreels_v4.world.split import WorldSplit


@dataclass(frozen=True, kw_only=True)
class WorldClip:
    """A rendered clip.

    Attributes:
        frames: ``[F, H, W, 3]`` uint8 RGB.
        audio: ``[C, S]`` float32 in [-1, 1].
        caption: structured caption (:func:`caption`).
        scene: what was drawn; ``truth``: positions and wall hits (:class:`WorldTruth`).
        config, seed, index, split: how it was made (``make_clip(config, seed, index, split)``
            rebuilds it bit for bit).
    """

    frames: np.ndarray
    audio: np.ndarray
    caption: str
    scene: Scene
    truth: WorldTruth
    config: WorldConfig
    seed: int
    index: int
    split: WorldSplit

    def labels(self) -> dict[str, np.ndarray]:
        """Attribute labels padded to ``config.max_objects`` (see :func:`label_ids`)."""
        return label_ids(self.scene, self.config.max_objects)

    def video(self) -> np.ndarray:
        """Frames as float32 ``[3, F, H, W]`` in [-1, 1] (the project's pixel-video layout)."""
        return np.ascontiguousarray(self.frames.transpose(3, 0, 1, 2), dtype=np.float32) / 127.5 - 1.0


def render_scene(scene: Scene, config: WorldConfig) -> tuple[np.ndarray, np.ndarray, WorldTruth]:
    """Render a given scene: ``(frames [F, H, W, 3] uint8, audio [C, S] float32, truth)``."""
    truth = simulate(scene, config)
    return render_frames(scene, truth.positions, config), render_audio(scene, truth, config), truth


def make_clip(
    config: WorldConfig, *, seed: int, index: int, split: WorldSplit = WorldSplit.TRAIN
) -> WorldClip:
    """Clip ``index`` of the dataset ``(config, seed, split)``; deterministic, order-independent."""
    split = WorldSplit(split)
    scene = sample_scene(config, clip_rng(seed, index, split), split)
    frames, audio, truth = render_scene(scene, config)
    return WorldClip(
        frames=frames,
        audio=audio,
        caption=caption(scene),
        scene=scene,
        truth=truth,
        config=config,
        seed=int(seed),
        index=int(index),
        split=split,
    )
