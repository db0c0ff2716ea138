"""``LatentCacheDataModule``: batches from a latent cache, within buckets, resumable mid-epoch.

The train loader is torchdata's ``StatefulDataLoader`` over a :class:`BucketBatchSampler`; Lightning
stores its state in the checkpoint, so a resumed run sees exactly the batches the uninterrupted one
would have seen. Validation uses a second cache (held-out clips) or none.
"""

from __future__ import annotations

import os

import lightning as L
from torchdata.stateful_dataloader import StatefulDataLoader

from skyreels_v4.errors import PreflightError
from skyreels_v4.runs import data_parallel_of
from skyreels_v4.training.cache import BucketBatchSampler, LatentCache, collate_cache_items

__all__ = ["LatentCacheDataModule"]


class _Items:
    """Map-style view of a cache (items by position)."""

    def __init__(self, cache: LatentCache) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, position: int) -> dict:
        return self.cache[position]


class LatentCacheDataModule(L.LightningDataModule):
    """With several processes the batches are sharded over the data-parallel replicas (see
    ``BucketBatchSampler``); the trainer needs ``use_distributed_sampler=False``.

    Args:
    cache_dir: a cache built by ``skyreels-v4 cache`` / ``build_latent_cache``.
    val_cache_dir: a held-out cache for the validation loss (None: no validation data).
    batch_size: clips per batch (every batch comes from one bucket).
    shuffle_seed: the shuffling seed (batch order is a function of it and the epoch only).
    num_workers: loader workers (0 = in the main process).
    """

    def __init__(
        self,
        *,
        cache_dir: str,
        val_cache_dir: str | None = None,
        batch_size: int = 8,
        shuffle_seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name, path in (("cache_dir", cache_dir), ("val_cache_dir", val_cache_dir)):
            if path is not None and not os.path.isdir(path):
                raise PreflightError(
                    f"data.{name}: {path} is not a folder; build it first with `skyreels-v4 cache`"
                )
        self.cache = LatentCache(cache_dir)
        self.val_cache = None if val_cache_dir is None else LatentCache(val_cache_dir)
        if self.val_cache is not None:
            for name in ("video_latent_channels", "audio_latent_channels", "text_dim"):
                if getattr(self.val_cache, name) != getattr(self.cache, name):
                    raise PreflightError(
                        f"data.val_cache_dir: its {name} {getattr(self.val_cache, name)} differs from the "
                        f"training cache's {getattr(self.cache, name)}"
                    )
        if len(self.cache) < batch_size:
            raise PreflightError(
                f"data.batch_size: {batch_size} is larger than the cache's {len(self.cache)} clips"
            )

    def data_parallel(self) -> tuple[int, int]:
        """``(num_replicas, rank)`` of this process among the data-parallel replicas: from the trainer's
        strategy (``SkyReelsParallelStrategy`` counts one sequence-parallel group as one replica), or
        ``(1, 0)`` without a multi-process trainer."""
        return data_parallel_of(getattr(self, "trainer", None), owner="LatentCacheDataModule")

    def train_dataloader(self) -> StatefulDataLoader:
        replicas, rank = self.data_parallel()
        sampler = BucketBatchSampler(
            self.cache,
            batch_size=self.hparams.batch_size,
            seed=self.hparams.shuffle_seed,
            num_replicas=replicas,
            rank=rank,
        )
        return StatefulDataLoader(
            _Items(self.cache),
            batch_sampler=sampler,
            collate_fn=collate_cache_items,
            num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> StatefulDataLoader | list:
        if self.val_cache is None:
            return []
        replicas, rank = self.data_parallel()
        sampler = BucketBatchSampler(
            self.val_cache,
            batch_size=max(1, min(self.hparams.batch_size, len(self.val_cache) // replicas)),
            seed=0,
            drop_last=replicas > 1,  # every replica must run the same number of validation steps
            num_replicas=replicas,
            rank=rank,
        )
        return StatefulDataLoader(
            _Items(self.val_cache), batch_sampler=sampler, collate_fn=collate_cache_items
        )
