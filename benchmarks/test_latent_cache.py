"""Latent-cache reads (issue 13): seconds per training batch drawn from ``LatentCache``.

Run: python -m pytest benchmarks/test_latent_cache.py --benchmark-only -q
     (or python -m benchmarks.report benchmarks/test_latent_cache.py for the table)

A cache shaped like the evidence quickstart's (3 s clips at 16 fps, 32x32: video latents
[192, 13, 8, 8] and spectrogram latents [257, 191] per clip, fp32, about 0.83 MB a clip) in 16 shards
of 64 (the quickstart's shard size; 0.85 GB in a temporary folder), read in the bucket sampler's
shuffled batches of 8. Baseline: what the cache did before it mapped its shards, i.e. load the whole
shard of an item (checked for NaN/inf elementwise) into an LRU of 8 shards and index the row, so a
random batch reloads most of its shards. ``LatentCache`` maps every shard file and
reads (and checks) an item's own rows. Both read the same batches; the files are in the page cache
after the first round, as in a training run.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from skyreels_v4.io import read_safetensors, save_safetensors
from skyreels_v4.training.cache import CACHE_INDEX, BucketBatchSampler, LatentCache, collate_cache_items

SHARDS, ROWS, BATCH, BATCHES = 16, 64, 8, 32
VIDEO, AUDIO, TEXT = (192, 13, 8, 8), (257, 191), (16, 32)
SHAPE = f"{SHARDS} shards x {ROWS} clips, video {list(VIDEO)}, audio {list(AUDIO)}, batch {BATCH}"
GROUP = "latent cache: seconds per 32 batches of 8 clips"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A cache folder in the format ``build_latent_cache`` writes, filled with random latents (the
    reads do not depend on the values; encoding 1024 world clips would take minutes)."""
    from skyreels_v4.io import atomic_write_json
    from skyreels_v4.training import cache as cache_module

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cache")
    generator = torch.Generator().manual_seed(0)
    items = []
    for shard in range(SHARDS):
        name = f"shard-{shard:05d}.safetensors"
        mask = torch.zeros(ROWS, TEXT[0], dtype=torch.bool)
        mask[:, :10] = True
        save_safetensors(
            root / name,
            {
                "video_latents": torch.randn(ROWS, *VIDEO, generator=generator),
                "audio_latents": torch.randn(ROWS, *AUDIO, generator=generator),
                "text_tokens": torch.randn(ROWS, *TEXT, generator=generator),
                "text_mask": mask,
            },
        )
        items += [{"shard": name, "row": row, "bucket": 0} for row in range(ROWS)]
    save_safetensors(root / "empty_prompt.safetensors", {"text_tokens": torch.zeros(1, TEXT[1])})
    save_safetensors(root / "black_latent.safetensors", {"8x8": torch.zeros(VIDEO[0], 1, 8, 8)})
    bucket = {"id": 0, "video_shape": list(VIDEO), "audio_shape": list(AUDIO), "count": len(items)}
    index = {
        "format": cache_module.CACHE_FORMAT,
        "format_version": cache_module.CACHE_VERSION,
        "video_latent_channels": VIDEO[0],
        "audio_latent_channels": AUDIO[0],
        "buckets": [bucket],
        "items": items,
    }
    atomic_write_json(root / CACHE_INDEX, index)
    yield root
    torch.set_num_threads(threads)


class WholeShardLatentCache(LatentCache):
    """The earlier read path: an item's whole shard, loaded and checked for NaN/inf elementwise (as
    ``read_safetensors(check_finite=True)`` did then), in an LRU of 8 shards
    (``benchmarks.training_step_wall --whole-shard-reads`` uses it too)."""

    def __getitem__(self, position: int) -> dict:
        shards = self.__dict__.setdefault("_whole_shards", OrderedDict())
        item = self.items[position]
        shard = shards.get(item["shard"])
        if shard is None:
            shard = read_safetensors(self.root / item["shard"])
            for tensor in shard.values():  # the elementwise check read_safetensors made then
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise ValueError(f"{item['shard']}: NaN or inf")
            shards[item["shard"]] = shard
            while len(shards) > 8:
                shards.popitem(last=False)
        else:
            shards.move_to_end(item["shard"])
        row = item["row"]
        n = int(shard["text_mask"][row].sum())
        out = {
            "video_latents": shard["video_latents"][row],
            "audio_latents": shard["audio_latents"][row],
            "text_tokens": shard["text_tokens"][row, :n],
            "index": position,
            "bucket": item["bucket"],
        }
        if "text_pooled" in shard:
            out["pooled_text"] = shard["text_pooled"][row]
        if "keyframe_latents" in shard:
            out["keyframe_latents"] = shard["keyframe_latents"][row]
        return out


def _batches(cache: LatentCache) -> list[list[int]]:
    batches = list(BucketBatchSampler(cache, batch_size=BATCH, seed=0))
    return batches[:BATCHES]


def _read(source, batches) -> float:
    total = 0.0
    for batch in batches:
        collated = collate_cache_items([source[i] for i in batch])
        total += float(collated["audio_latents"][0, 0, 0])
    return total


@pytest.mark.parametrize("impl", ["whole shards (before)", "mapped rows"])
def test_cache_batches(benchmark, cache_dir, impl):
    cache = LatentCache(cache_dir)
    batches = _batches(cache)
    source = WholeShardLatentCache(cache_dir) if impl.startswith("whole") else cache
    benchmark.group = GROUP
    benchmark.extra_info.update(
        impl=impl, baseline=impl.startswith("whole"), shape=SHAPE, dtype="float32", device="cpu"
    )
    result = benchmark.pedantic(_read, args=(source, batches), rounds=3, iterations=1, warmup_rounds=1)
    assert result == _read(WholeShardLatentCache(cache_dir), batches)  # the same values
