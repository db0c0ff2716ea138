"""One training run for test_scale_lightning_fit.py: plain (one process) or under torchrun with
``SkyReelsParallelStrategy``. Writes ``rank<N>.json``: the loss and data items of every step, the
sequence-parallel size, the world size and whether the weights are sharded (DTensors).

    python lightning_fit_worker.py joint CACHE OUT STEPS [DP_SHARD SP [CHECKPOINTS [full]]]
    python lightning_fit_worker.py refiner - OUT STEPS [DP_SHARD SP [CHECKPOINTS [full]]]

``joint``: the tiny joint model on a latent cache; ``refiner``: the refiner of paper 4.5 (VSA with a
sparsity ramp, inpainting boxes, padded text) on procedural triples. ``CHECKPOINTS``: a folder for a
sharded ``last.ckpt`` written after every step; the run resumes from it when it exists (found by
``skyreels_v4.runs.find_last_checkpoint``, as recipes do); the joint run also exports its EMA model
to ``OUT/model`` when training ends (``ExportModel``). ``full``: the strategy writes one checkpoint
file from rank 0 (``save_distributed_checkpoint=False``) instead of a sharded folder. The report then
also holds the checkpoint it resumed from and a checksum of the EMA shadows (gathered from every rank).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.distributed.tensor import DTensor

from skyreels_refiner_vsa import SparsityRamp, VSAConfig
from skyreels_v4.refiner import RefinerLightningModule, RefinerTripleDataModule
from skyreels_v4.runs import find_last_checkpoint
from skyreels_v4.scale.lightning import SkyReelsParallelStrategy
from skyreels_v4.training import JointTrainingModule, LatentCacheDataModule
from skyreels_v4.training.stages import ExportModel

#: The tiny joint module of the training tests (test_training.py's ``make_module`` starts from it too).
MODULE_ARGS = dict(
    preset="tiny",
    model_overrides={"num_dual_blocks": 1, "num_single_blocks": 1, "num_refiner_blocks": 1},
    prediction="x0",
    tasks={"t2av": 0.5, "v2a": 0.25, "image_to_video": 0.25},
    text_dropout=0.2,
    ema_decay=0.9,
    learning_rate=2e-3,
    seed=3,
)


class Record(L.Callback):
    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.steps.append({"loss": float(loss.detach()), "items": batch["index"].tolist()})


def _joint(cache: str) -> tuple[L.LightningModule, L.LightningDataModule, torch.nn.Module]:
    data = LatentCacheDataModule(cache_dir=cache, batch_size=2, shuffle_seed=1)
    channels = {
        "video_latent_channels": data.cache.video_latent_channels,
        "audio_latent_channels": data.cache.audio_latent_channels,
        "text_dim": data.cache.text_dim,
    }
    # The module parallelises itself under the strategy.
    module = JointTrainingModule(**MODULE_ARGS, warmup_steps=1, **channels)
    return module, data, module.transformer


def _refiner() -> tuple[L.LightningModule, L.LightningDataModule, torch.nn.Module]:
    # High-res (5, 16, 16) -> 5 x 8 x 8 = 320 video tokens, 5 VSA blocks of 64; the ramp moves the
    # sparsity every step (so the sharded attention follows set_sparsity).
    module = RefinerLightningModule(
        vsa=VSAConfig(sparsity=0.5, backend="torch"),
        sparsity_ramp=SparsityRamp(target=0.5, steps=2),
        learning_rate=2e-3,
    )
    data = RefinerTripleDataModule(
        num_train=8, num_val=4, batch_size=2, high_res_shape=(5, 16, 16), keyframe_indices=(0,),
        inpaint_probability=0.5,
    )  # fmt: skip
    return module, data, module.refiner


def main() -> None:
    kind, source, out, steps = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    parallel = len(sys.argv) > 5
    torch.set_num_threads(1)
    torch.manual_seed(0)
    module, data, model = _joint(source) if kind == "joint" else _refiner()
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
    checkpoints = sys.argv[7] if len(sys.argv) > 7 else None
    if checkpoints is not None:
        common["enable_checkpointing"] = True
        common["callbacks"] = [
            record,
            ModelCheckpoint(dirpath=checkpoints, save_last=True, save_top_k=0, every_n_train_steps=1),
        ]
        if kind == "joint":  # the EMA model, gathered from the shards, as the next stage's init_from
            common["callbacks"].append(ExportModel(str(out / "model")))
    if parallel:
        dp_shard, sp = int(sys.argv[5]), int(sys.argv[6])
        full_file = len(sys.argv) > 8 and sys.argv[8] == "full"  # one-file checkpoints from rank 0
        strategy = SkyReelsParallelStrategy(
            dp_shard=dp_shard, sp=sp, mixed_precision="fp32", save_distributed_checkpoint=not full_file
        )
        trainer = L.Trainer(devices=dp_shard * sp, strategy=strategy, use_distributed_sampler=False, **common)
    else:
        trainer = L.Trainer(devices=1, **common)
    resume = None if checkpoints is None else find_last_checkpoint(trainer)
    trainer.fit(module, data, ckpt_path=resume)
    out.mkdir(parents=True, exist_ok=True)
    group = getattr(model, "_sequence_parallel_group", None)
    sp_size = 1 if group is None else torch.distributed.get_world_size(group)
    sharded = all(isinstance(p, DTensor) for p in model.parameters())
    report = {"steps": record.steps, "sp": sp_size, "world": trainer.world_size, "sharded": sharded}
    if checkpoints is not None:
        report["resumed_from"] = None if resume is None else resume.name
        shadows = [s.full_tensor() if isinstance(s, DTensor) else s for s in module.ema]
        report["ema_checksum"] = float(sum(s.double().square().sum() for s in shadows))
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
