"""Wall seconds per training step of a quickstart run, batch reading included (issue 13).

    python -m benchmarks.training_step_wall --run outputs/evidence [--steps 40] [--compile]

Builds the run's training module from its folder (``quickstart_settings.json``, ``cache_train``,
``cache_val``; ``skyreels_v4.training.quickstart.training_module``), trains ``--steps`` steps from
scratch with Lightning (no checkpoints, no validation, nothing written into the folder), and prints
the median time from one batch start to the next over the steps after the 10th, so the data loader's
reads count, as they do in a run; and the first three steps' times (``--compile`` shows its compile
time there). ``--precision bf16-mixed`` runs the steps under bfloat16 autocast. ``--compile`` compiles
every block and exchange (``StagedBlock.compile``);
``--whole-shard-reads`` reads batches the way the latent cache did before it memory-mapped its shards
(``benchmarks/test_latent_cache.py``'s baseline), the baseline of the data-path row in
docs/training.md. ``--profile K`` also runs ``torch.profiler`` over the last K steps and prints its
table of operators by self CPU time (where a step's time goes). Compare variants on the same machine,
one job at a time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from itertools import pairwise
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training_step_wall", description=__doc__)
    parser.add_argument("--run", required=True, help="a quickstart run folder (its caches are read)")
    parser.add_argument("--steps", type=int, default=40, help="steps to time (default: %(default)s; >= 12)")
    parser.add_argument("--compile", action="store_true", help="compile every block and exchange")
    parser.add_argument(
        "--whole-shard-reads",
        action="store_true",
        help="read batches the way the cache did before 2026-12-07 (whole shards; the baseline)",
    )
    parser.add_argument(
        "--precision",
        default="32-true",
        choices=("32-true", "bf16-mixed"),
        help="Lightning precision of the steps (bf16-mixed: autocast to bfloat16; the run clips gradients, "
        "so its AdamW is PyTorch's default, not the fused one) (default: %(default)s)",
    )
    parser.add_argument(
        "--profile", type=int, default=0, metavar="K", help="profile the last K steps (default: none)"
    )
    args = parser.parse_args(argv)
    if args.steps < 12:
        parser.error(f"--steps: expected >= 12 (the first 10 are warm-up), got {args.steps}")
    if not 0 <= args.profile <= args.steps - 10:
        parser.error(f"--profile: expected 0..{args.steps - 10} (after warm-up), got {args.profile}")

    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback

    from skyreels_v4.training.data import LatentCacheDataModule
    from skyreels_v4.training.quickstart import saved_identity, training_module

    root = Path(args.run)
    identity = saved_identity(root)
    torch.manual_seed(int(identity["seed"]))
    data = LatentCacheDataModule(
        cache_dir=str(root / "cache_train"),
        val_cache_dir=str(root / "cache_val"),
        batch_size=int(identity["batch_size"]),
        shuffle_seed=int(identity["seed"]),
    )
    if args.whole_shard_reads:
        from benchmarks.test_latent_cache import WholeShardLatentCache

        data.cache = WholeShardLatentCache(root / "cache_train")
    data.setup("fit")
    module = training_module(
        identity,
        video_latent_channels=data.cache.video_latent_channels,
        audio_latent_channels=data.cache.audio_latent_channels,
        text_dim=data.cache.text_dim,
    )
    if args.compile:
        model = module.transformer
        for unit in [*model.video.blocks, *model.audio.blocks, *model.exchanges]:
            unit.compile()

    starts: list[float] = []
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])

    class _BatchStarts(Callback):
        def on_train_batch_start(self, *_: object) -> None:
            starts.append(time.perf_counter())
            if args.profile and len(starts) == args.steps - args.profile + 1:
                profiler.start()

        def on_train_end(self, *_: object) -> None:
            if args.profile:
                profiler.stop()

    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=args.steps, precision=args.precision, gradient_clip_val=1.0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, callbacks=[_BatchStarts()], default_root_dir=str(root / ".step_wall"),
    )  # fmt: skip
    trainer.fit(module, data)
    times = [b - a for a, b in pairwise(starts)]
    median = statistics.median(times[10:])
    mean = statistics.fmean(times[10:])  # a task mixture's image and clip steps differ tenfold
    variant = ("compiled blocks" if args.compile else "eager") + (
        ", whole-shard reads" if args.whole_shard_reads else ""
    )
    variant += f", {args.precision}"
    print(
        f"{variant}: {median:.4f} s per step (median of steps 11-{len(times)}), {1 / median:.3f} steps/s; "
        f"mean {mean:.4f} s; "
        f"first steps {[round(t, 2) for t in times[:3]]} s; torch threads {torch.get_num_threads()}"
    )
    if args.profile:
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
