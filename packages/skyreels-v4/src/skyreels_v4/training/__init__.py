"""Training SkyReels-V4 (paper section 4): the latent cache, the data module, the task mixture and the
joint flow-matching Lightning module. docs/training.md."""

from skyreels_v4.training.cache import (
    CACHE_INDEX,
    CACHE_PROGRESS,
    BucketBatchSampler,
    CacheSample,
    CaptionRow,
    ExistingCache,
    LatentCache,
    build_latent_cache,
    collate_cache_items,
    folder_samples,
    prompt_text,
    read_caption_listing,
    world_samples,
)
from skyreels_v4.training.data import LatentCacheDataModule
from skyreels_v4.training.module import JointTrainingModule, build_transformer_config, onset_weights
from skyreels_v4.training.tasks import JointTask, parse_task_mixture, sample_task

__all__ = [
    "CACHE_INDEX",
    "CACHE_PROGRESS",
    "BucketBatchSampler",
    "CacheSample",
    "CaptionRow",
    "ExistingCache",
    "JointTask",
    "JointTrainingModule",
    "LatentCache",
    "LatentCacheDataModule",
    "build_latent_cache",
    "build_transformer_config",
    "collate_cache_items",
    "folder_samples",
    "onset_weights",
    "parse_task_mixture",
    "prompt_text",
    "read_caption_listing",
    "sample_task",
    "world_samples",
]
