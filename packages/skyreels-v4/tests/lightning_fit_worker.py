"""One training run for test_scale_lightning_fit.py: plain (one process) or under torchrun with
``SkyReelsParallelStrategy``. Writes ``rank<N>.json``: the loss and cache items of every step, the
sequence-parallel size and the world size.

    python lightning_fit_worker.py CACHE OUT STEPS [DP_SHARD SP]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch

from skyreels_v4.scale.lightning import SkyReelsParallelStrategy
from skyreels_v4.training import JointTrainingModule, LatentCacheDataModule

MODULE_ARGS = dict(
    preset="tiny",
    model_overrides={"num_dual_blocks": 1, "num_single_blocks": 1, "num_refiner_blocks": 1},
    prediction="x0",
    tasks={"t2av": 0.5, "v2a": 0.25, "image_to_video": 0.25},
    text_dropout=0.2,
    ema_decay=0.9,
    learning_rate=2e-3,
    warmup_steps=1,
    seed=3,
)


class Record(L.Callback):
    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.steps.append({"loss": float(loss.detach()), "items": batch["index"].tolist()})


def main() -> None:
    cache, out, steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    parallel = len(sys.argv) > 4
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = LatentCacheDataModule(cache_dir=cache, batch_size=2, shuffle_seed=1)
    channels = {
        "video_latent_channels": data.cache.video_latent_channels,
        "audio_latent_channels": data.cache.audio_latent_channels,
        "text_dim": data.cache.text_dim,
    }
    record = Record()
    common = dict(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        callbacks=[record],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
    )
    module = JointTrainingModule(**MODULE_ARGS, **channels)  # parallelises itself under the strategy
    if parallel:
        dp_shard, sp = int(sys.argv[4]), int(sys.argv[5])
        strategy = SkyReelsParallelStrategy(dp_shard=dp_shard, sp=sp, mixed_precision="fp32")
        trainer = L.Trainer(devices=dp_shard * sp, strategy=strategy, use_distributed_sampler=False, **common)
    else:
        trainer = L.Trainer(devices=1, **common)
    trainer.fit(module, data)
    out.mkdir(parents=True, exist_ok=True)
    group = getattr(module.transformer, "_sequence_parallel_group", None)
    sp_size = 1 if group is None else torch.distributed.get_world_size(group)
    report = {"steps": record.steps, "sp": sp_size, "world": trainer.world_size}
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
