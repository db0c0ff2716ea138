"""parallelize() under FSDP2/HSDP with 2 CPU processes (gloo) against one process (issue 15).

Each rank runs its half of a batch of 2; FSDP averages gradients over the data-parallel ranks, so
the mean of the rank losses and the gathered gradients must equal one process's full-batch values.
Tolerance: 1e-5 relative (fp32; only the summation order differs).
"""

from __future__ import annotations

import copy
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from skyreels_mmdit_blocks import JointAudioVideoTransformer, joint_preset
from skyreels_v4.scale.parallelize import (
    ActivationCheckpointing,
    MixedPrecision,
    ParallelDims,
    build_device_mesh,
    parallelize,
    shard_mesh,
)


def make_batch(config, batch: int = 2):
    g = torch.Generator().manual_seed(1)
    return {
        "video": torch.randn(batch, config.video.in_channels, 2, 4, 6, generator=g),
        "audio": torch.randn(batch, config.audio.in_channels, 11, generator=g),
        "text": torch.randn(batch, 5, config.video.text_dim, generator=g),
        "text_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])[:batch],
        "timestep": torch.tensor([300.0, 700.0])[:batch],
        "target_v": torch.randn(batch, config.video.out_channels, 2, 4, 6, generator=g),
        "target_a": torch.randn(batch, config.audio.out_channels, 11, generator=g),
    }


def loss_fn(model, b, rows):
    out = model(
        b["video"][rows], b["audio"][rows], timestep=b["timestep"][rows], text_tokens=b["text"][rows],
        text_mask=b["text_mask"][rows],
    )  # fmt: skip
    return (out.video - b["target_v"][rows]).square().mean() + (
        out.audio - b["target_a"][rows]
    ).square().mean()


def make_model():
    torch.manual_seed(0)
    model = JointAudioVideoTransformer(joint_preset("tiny"))
    with torch.no_grad():  # the zero-initialised exchanges / cross-attentions would give zero gradients
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.02)
    return model


def _worker(rank: int, world: int, init_file: str, dims: tuple[int, int, int], ac: str, result_dir: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        reference = make_model()
        model = copy.deepcopy(reference)
        b = make_batch(reference.config)
        ref_loss = loss_fn(reference, b, slice(0, 2))
        ref_loss.backward()

        mesh = build_device_mesh(ParallelDims(dp_replicate=dims[0], dp_shard=dims[1], sp=dims[2]))
        parallelize(
            model, mesh, mixed_precision=MixedPrecision.FP32,
            activation_checkpointing=ActivationCheckpointing(ac),
        )  # fmt: skip
        loss = loss_fn(model, b, slice(rank, rank + 1))
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        mean_loss /= world
        worst = 0.0
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            grad = p.grad.full_tensor()
            scale = q.grad.abs().max().clamp_min(1e-12)
            worst = max(worst, ((grad - q.grad).abs().max() / scale).item())
        if rank == 0:
            torch.save(
                {"loss": mean_loss.item(), "ref_loss": ref_loss.item(), "worst_grad": worst},
                os.path.join(result_dir, "result.pt"),
            )
    finally:
        dist.destroy_process_group()


def run_two_ranks(dims, ac):
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_worker, args=(2, os.path.join(folder, "init"), dims, ac, folder), nprocs=2, join=True)
        return torch.load(os.path.join(folder, "result.pt"), weights_only=True)


@pytest.mark.parametrize(("dims", "ac"), [((1, 2, 1), "none"), ((2, 1, 1), "full")], ids=["fsdp", "hsdp-ac"])
def test_fsdp2_step_matches_one_process(dims, ac):
    result = run_two_ranks(dims, ac)
    assert result["loss"] == pytest.approx(result["ref_loss"], rel=1e-5)
    assert result["worst_grad"] < 1e-5


def _refiner_worker(rank: int, world: int, init_file: str, result_dir: str):
    """The refiner (VSA in every block) under FSDP2 over 2 data-parallel ranks, half a batch each."""
    import scale_fixtures

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        reference = scale_fixtures.refiner_reference()
        model = copy.deepcopy(reference)
        inputs, target = scale_fixtures.refiner_inputs(reference.config, key_mask=True)
        ref_loss = (reference(**inputs) - target).square().mean()
        ref_loss.backward()
        parallelize(
            model, build_device_mesh(ParallelDims(dp_shard=world)), mixed_precision=MixedPrecision.FP32,
            activation_checkpointing=ActivationCheckpointing.EVERY_OTHER,
        )  # fmt: skip
        rows = slice(rank, rank + 1)
        mine = {k: v[rows] for k, v in inputs.items()}
        loss = (model(**mine) - target[rows]).square().mean()
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        worst = 0.0
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            scale = q.grad.abs().max().clamp_min(1e-12)
            worst = max(worst, ((p.grad.full_tensor() - q.grad).abs().max() / scale).item())
        if rank == 0:
            torch.save(
                {"loss": mean_loss.item() / world, "ref_loss": ref_loss.item(), "worst_grad": worst},
                os.path.join(result_dir, "result.pt"),
            )
    finally:
        dist.destroy_process_group()


def test_fsdp2_refiner_step_matches_one_process():
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_refiner_worker, args=(2, os.path.join(folder, "init"), folder), nprocs=2, join=True)
        result = torch.load(os.path.join(folder, "result.pt"), weights_only=True)
    assert result["loss"] == pytest.approx(result["ref_loss"], rel=1e-5)
    assert result["worst_grad"] < 1e-5


def test_bad_arguments():
    with pytest.raises(ValueError, match="dp_shard"):
        ParallelDims(dp_shard=0)
    with pytest.raises(TypeError, match="model must be a JointAudioVideoTransformer or a VideoRefiner"):
        parallelize(torch.nn.Linear(2, 2), None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"torch\.distributed"):
        build_device_mesh(ParallelDims())
    with pytest.raises(TypeError, match="mixed_precision"):
        parallelize(make_model(), None, mixed_precision="bf16")  # type: ignore[arg-type]
    assert callable(shard_mesh)
