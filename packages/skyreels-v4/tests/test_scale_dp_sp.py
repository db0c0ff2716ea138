"""Data parallelism x Ulysses sequence parallelism together: 4 CPU processes (gloo) against one (issue 15).

Meshes 1x2x2 (FSDP2 over dp_shard x sp) and 2x1x2 (HSDP: replicas x sp, with activation
checkpointing). Each sp group reads one sample of a batch of 2, picked by ``data_parallel_rank`` of the
rank's mesh coordinate (what the Lightning strategy's sampler uses); the model has audio, padded text
and video / audio references, and the video sequence (9 + 4 reference tokens) does not split evenly over
sp = 2. Checked against one process on the full batch: the mean of the data-parallel losses, every
gathered gradient, and the loss after one AdamW step on the sharded parameters. Tolerance 1e-5
relative to each tensor's largest entry (fp32; only summation orders differ).
"""

from __future__ import annotations

import copy
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import scale_fixtures
from skyreels_v4.scale.lightning import data_parallel_rank
from skyreels_v4.scale.parallelize import (
    ActivationCheckpointing,
    MixedPrecision,
    ParallelDims,
    build_device_mesh,
    parallelize,
)


def make_targets(config) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return (
        torch.randn(2, config.video.out_channels, 3, 2, 6, generator=g),
        torch.randn(2, config.audio.out_channels, 11, generator=g),
    )


def loss_on(model, batch: dict, targets, rows: slice) -> torch.Tensor:
    out = model(**{k: v[rows] for k, v in batch.items()})
    return (out.video - targets[0][rows]).square().mean() + (out.audio - targets[1][rows]).square().mean()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def _worker(rank: int, world: int, init_file: str, dims: tuple[int, int, int], ac: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        reference = scale_fixtures.make_model()
        model = copy.deepcopy(reference)
        batch, targets = scale_fixtures.make_inputs(reference.config), make_targets(reference.config)
        ref_opt = torch.optim.AdamW(reference.parameters(), lr=1e-3)
        ref_loss = loss_on(reference, batch, targets, slice(0, 2))
        ref_loss.backward()

        parallel = ParallelDims(dp_replicate=dims[0], dp_shard=dims[1], sp=dims[2])
        mesh = build_device_mesh(parallel)
        coordinate = tuple(int(c) for c in mesh.get_coordinate())
        dp_rank, dp_size = data_parallel_rank(coordinate, parallel)
        parallelize(
            model, mesh, mixed_precision=MixedPrecision.FP32,
            activation_checkpointing=ActivationCheckpointing(ac),
        )  # fmt: skip
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        rows = slice(dp_rank, dp_rank + 1)
        loss = loss_on(model, batch, targets, rows)
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        mean_loss /= world  # every rank of an sp group holds its sample's loss
        worst = max(
            _relative(p.grad.full_tensor(), q.grad)
            for p, q in zip(model.parameters(), reference.parameters(), strict=True)
        )
        opt.step()
        ref_opt.step()
        with torch.no_grad():
            next_loss = loss_on(model, batch, targets, rows).detach().clone()
            dist.all_reduce(next_loss)
            next_loss /= world
            ref_next = loss_on(reference, batch, targets, slice(0, 2))
        if rank == 0:
            torch.save(
                {
                    "loss": mean_loss.item(),
                    "ref_loss": ref_loss.item(),
                    "grad": worst,
                    "next": next_loss.item(),
                    "ref_next": ref_next.item(),
                    "dp_size": dp_size,
                },
                os.path.join(out, "result.pt"),
            )
        # Every rank reports its data-parallel rank so the test can check the sp groups' samples.
        ranks = [None] * world
        dist.all_gather_object(ranks, (coordinate, dp_rank))
        if rank == 0:
            torch.save({"ranks": ranks}, os.path.join(out, "ranks.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("dims", "ac"), [((1, 2, 2), "none"), ((2, 1, 2), "full")], ids=["fsdp-x-sp", "hsdp-x-sp-ac"]
)
def test_dp2_x_sp2_matches_one_process(dims, ac):
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_worker, args=(4, os.path.join(folder, "init"), dims, ac, folder), nprocs=4, join=True)
        result = torch.load(os.path.join(folder, "result.pt"), weights_only=True)
        ranks = torch.load(os.path.join(folder, "ranks.pt"), weights_only=True)["ranks"]
    assert result["dp_size"] == 2
    # The two ranks of an sp group (same replicate/shard coordinate) read the same sample; the groups differ.
    by_group: dict[tuple[int, int], set[int]] = {}
    for (r, s, _), dp_rank in ranks:
        by_group.setdefault((r, s), set()).add(dp_rank)
    assert sorted(next(iter(v)) for v in by_group.values()) == [0, 1]
    assert all(len(v) == 1 for v in by_group.values())
    assert result["loss"] == pytest.approx(result["ref_loss"], rel=1e-5)
    assert result["grad"] < 1e-5
    assert result["next"] == pytest.approx(result["ref_next"], rel=1e-5)
    assert result["next"] < result["loss"]  # the step did something
