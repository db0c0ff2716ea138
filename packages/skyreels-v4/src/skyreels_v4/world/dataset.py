"""The world as a map-style torch ``Dataset``: item ``i`` is always the same clip."""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch.utils.data import Dataset

from skyreels_v4.world.clip import WorldClip, make_clip
from skyreels_v4.world.config import WorldConfig
from skyreels_v4.world.split import WorldSplit


class ProceduralAVDataset(Dataset):
    """``length`` procedural audio-visual clips of ``config``, drawn from ``seed`` and ``split``.

    Item ``i`` depends only on ``(config, seed, split, i)`` (a clip is rendered on the CPU with
    NumPy from its own random stream), so it is the same in any order, batch, worker or device.
    Every value has a fixed shape, so ``torch.utils.data.default_collate`` batches items.

    Item keys (``N = config.max_objects``, ``K = config.max_wall_hits``):
        ``video`` ``[3, F, H, W]`` float32 in [-1, 1]; ``audio`` ``[C, S]`` float32 in [-1, 1];
        ``caption`` str; ``colour_ids`` / ``shape_ids`` ``[N]`` int64 (-1 = no object);
        ``background_id``, ``num_objects`` int64 scalars; ``has_bgm`` bool scalar;
        ``positions`` ``[F, N, 2]`` float32 box centres in canvas units (NaN = no object);
        ``hit_times`` ``[K]`` float64 seconds (NaN padding); ``hit_objects`` / ``hit_walls``
        ``[K]`` int64 (-1 padding); ``hit_sounded`` ``[K]`` bool; ``num_hits`` int64; ``index`` int64.
    """

    def __init__(self, config: WorldConfig, *, length: int, seed: int, split: WorldSplit = WorldSplit.TRAIN):
        if not isinstance(config, WorldConfig):
            raise TypeError(f"config: expected a WorldConfig, got {type(config).__name__}")
        for name, value in (("length", length), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
        self.config = config
        self.length = length
        self.seed = seed
        self.split = WorldSplit(split)

    def __len__(self) -> int:
        return self.length

    def clip(self, index: int) -> WorldClip:
        """The full :class:`WorldClip` of item ``index`` (NumPy arrays, scene and ground truth)."""
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"index: expected an int, got {type(index).__name__}") from None
        if not 0 <= index < self.length:
            raise IndexError(f"index: expected 0 <= index < {self.length}, got {index}")
        return make_clip(self.config, seed=self.seed, index=index, split=self.split)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        clip = self.clip(index)
        config = self.config
        labels = clip.labels()
        num_objects = len(clip.scene.objects)
        positions = np.full((config.num_frames, config.max_objects, 2), np.nan, dtype=np.float32)
        positions[:, :num_objects] = clip.truth.positions
        num_hits = clip.truth.hit_times.size
        hit_times = np.full(config.max_wall_hits, np.nan)
        hit_objects = np.full(config.max_wall_hits, -1, dtype=np.int64)
        hit_walls = np.full(config.max_wall_hits, -1, dtype=np.int64)
        hit_sounded = np.zeros(config.max_wall_hits, dtype=bool)
        hit_times[:num_hits] = clip.truth.hit_times
        hit_objects[:num_hits] = clip.truth.hit_objects
        hit_walls[:num_hits] = clip.truth.hit_walls
        hit_sounded[:num_hits] = clip.truth.hit_sounded
        item: dict[str, torch.Tensor | str] = {
            "video": torch.from_numpy(clip.video()),
            "audio": torch.from_numpy(clip.audio),
            "caption": clip.caption,
            "positions": torch.from_numpy(positions),
            "hit_times": torch.from_numpy(hit_times),
            "hit_objects": torch.from_numpy(hit_objects),
            "hit_walls": torch.from_numpy(hit_walls),
            "hit_sounded": torch.from_numpy(hit_sounded),
            "num_hits": torch.tensor(num_hits, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        item.update({key: torch.from_numpy(np.asarray(value)) for key, value in labels.items()})
        return item
