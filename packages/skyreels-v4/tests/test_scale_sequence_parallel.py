"""Ulysses sequence parallelism in the joint model (issue 15): 2 CPU processes (gloo) against one.

The tiny joint model with audio, padded text, video and audio references (eq. 8) and an uneven video
length (13 tokens over 2 ranks): the SP=2 forward equals the one-process forward, and the per-rank
gradients summed over the group and divided by 2 (every rank computes the loss on the replicated
output) equal the one-process gradients; the same with a reference token masked as a key in one
sample (the dense-mask path); and one training step under parallelize() with FSDP2 over the sp
dimension and activation checkpointing; the time-local exchange (``exchange_window``), with and
without video and audio key masks; and video sparse attention in the base model (a 2 x 4 x 8 grid in 4
blocks, half of them kept, plus 3 reference tokens: 67 tokens over 2 ranks), with and without a masked
reference key, also under parallelize (FSDP2 + checkpointing); and the refiner of paper 4.5 (VSA in
every block) on the same grid, alone and under parallelize (FSDP2 over the sp ranks + checkpointing).
Tolerance: 1e-5 relative to the largest entry (fp32).
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
from skyreels_v4.scale.parallelize import (
    ActivationCheckpointing,
    MixedPrecision,
    ParallelDims,
    build_device_mesh,
    parallelize,
)
from skyreels_v4.scale.sequence_parallel import (
    ShardedKeys,
    UlyssesJointAttention,
    apply_sequence_parallel,
    sequence_parallel_forward,
)


def make_inputs(config, *, key_mask: bool) -> dict:
    inputs = scale_fixtures.make_inputs(config)
    if key_mask:
        keys = torch.ones(2, 13, dtype=torch.bool)
        keys[0, 1] = False  # a padding-only reference token in sample 0: not a prefix -> dense mask
        inputs["video_key_mask"] = keys
    return inputs


#: The time-local eq. 5 cases: (exchange window in latent frames, video key mask, audio key mask). The
#: tiny clip has 3 latent frames, so a window of 0.5 leaves each audio token one of them to read.
WINDOW_CASES = {"window": (0.5, False, False), "window_masked": (0.5, True, True)}


def _window_case(rank: int, world: int, window: float, key_mask: bool, audio_mask: bool) -> dict:
    reference = scale_fixtures.make_model(exchange_window=window)
    inputs = make_inputs(reference.config, key_mask=key_mask)
    if audio_mask:
        audio_keys = torch.ones(2, 14, dtype=torch.bool)
        audio_keys[1, 5] = False  # one generated audio token in sample 1 may not be read
        inputs["audio_key_mask"] = audio_keys
    result = _sp_case(rank, world, key_mask=key_mask, reference=reference, inputs=inputs)
    with torch.no_grad():  # the window must matter here, or the parity above could not fail
        global_exchange = scale_fixtures.make_model()
        result["window_effect"] = _relative(global_exchange(**inputs).audio, reference(**inputs).audio)
    return result


#: VSA cases: whether sample 0 has a masked reference key (the dense-mask path).
VSA_CASES = {"vsa": False, "vsa_masked": True}


def _vsa_model():
    from skyreels_refiner_vsa import VSAConfig
    from skyreels_v4.model.video_sparse import enable_video_sparse_attention

    model = scale_fixtures.make_model()
    torch.manual_seed(5)
    vsa = enable_video_sparse_attention(model, VSAConfig(sparsity=0.5, cube=(1, 4, 4), backend="torch"))
    with torch.no_grad():  # a zero gate would hide the coarse stage
        for p in vsa.parameters():
            p.normal_(std=0.05)
    return model


def _vsa_inputs(config, key_mask: bool) -> dict:
    inputs = scale_fixtures.make_inputs(config)
    g = torch.Generator().manual_seed(3)
    c_v = config.video.in_channels
    inputs["video_latents"] = torch.randn(2, c_v, 2, 8, 16, generator=g)  # grid 2 x 4 x 8 = 64 tokens
    inputs["video_reference_latents"] = torch.randn(2, c_v, 1, 2, 6, generator=g)  # 3 tokens
    if key_mask:
        keys = torch.ones(2, 67, dtype=torch.bool)
        keys[0, 1] = False
        inputs["video_key_mask"] = keys
    return inputs


def _vsa_case(rank: int, world: int, key_mask: bool) -> dict:
    reference = _vsa_model()
    inputs = _vsa_inputs(reference.config, key_mask)
    result = _sp_case(rank, world, key_mask=False, reference=reference, inputs=inputs)
    with torch.no_grad():  # the sparse attention must matter here, or the parity could not fail
        dense = scale_fixtures.make_model()
        result["vsa_effect"] = _relative(dense(**inputs).video, reference(**inputs).video)
    return result


def _refiner_case(rank: int, world: int, key_mask: bool) -> dict:
    """The refiner (``VideoRefiner``) under SP=2 against one process: forward and gradients."""
    reference = scale_fixtures.refiner_reference()
    model = apply_sequence_parallel(copy.deepcopy(reference), dist.group.WORLD)
    inputs, target = scale_fixtures.refiner_inputs(reference.config, key_mask)
    ref_out = reference(**inputs)
    (ref_out - target).square().mean().backward()
    out = model(**inputs)
    (out - target).square().mean().backward()
    worst = _summed_gradient_error(model, reference, world)
    return {"video": _relative(out, ref_out), "grad": worst, "shape": out.shape == ref_out.shape}


def _fsdp_sp_refiner_case(rank: int, world: int) -> dict:
    """The refiner under parallelize (SP = 2, FSDP2 over the sp ranks, full checkpointing)."""
    reference = scale_fixtures.refiner_reference()
    inputs, target = scale_fixtures.refiner_inputs(reference.config, key_mask=True)
    return _fsdp_sp_case(rank, world, reference, inputs, loss_fn=lambda out: (out - target).square().mean())


REFINER_CASES = {"refiner": False, "refiner_masked": True}


def loss_of(out) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    target_v, target_a = torch.randn(out.video.shape, generator=g), torch.randn(out.audio.shape, generator=g)
    return (out.video - target_v).square().mean() + (out.audio - target_a).square().mean()


def _summed_gradient_error(model, reference, world: int) -> float:
    """Largest relative error of the per-rank gradients summed over the group and divided by its size
    (every rank computes the loss on the replicated output) against one process's gradients."""
    worst = 0.0
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        grad = p.grad.clone()
        dist.all_reduce(grad)
        worst = max(worst, _relative(grad / world, q.grad))
    return worst


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def _sp_case(rank: int, world: int, key_mask: bool, reference=None, inputs=None) -> dict:
    reference = scale_fixtures.make_model() if reference is None else reference
    model = apply_sequence_parallel(copy.deepcopy(reference), dist.group.WORLD)
    inputs = make_inputs(reference.config, key_mask=key_mask) if inputs is None else inputs
    ref_out = reference(**inputs)
    loss_of(ref_out).backward()
    out = model(**inputs)
    loss_of(out).backward()
    worst = _summed_gradient_error(model, reference, world)
    return {
        "video": _relative(out.video, ref_out.video),
        "audio": _relative(out.audio, ref_out.audio),
        "grad": worst,
        "shape": tuple(out.video.shape) == tuple(ref_out.video.shape),
    }


def _fsdp_sp_case(rank: int, world: int, reference=None, inputs=None, loss_fn=loss_of) -> dict:
    """One step under parallelize (SP = world, FSDP2 over the sp ranks, full checkpointing) against
    one process: loss, every gradient, and whether the weights really are sharded."""
    reference = scale_fixtures.make_model() if reference is None else reference
    model = copy.deepcopy(reference)
    inputs = make_inputs(reference.config, key_mask=False) if inputs is None else inputs
    ref_loss = loss_fn(reference(**inputs))
    ref_loss.backward()
    mesh = build_device_mesh(ParallelDims(sp=world))
    parallelize(
        model, mesh, mixed_precision=MixedPrecision.FP32,
        activation_checkpointing=ActivationCheckpointing.FULL,
    )  # fmt: skip
    loss = loss_fn(model(**inputs))  # same batch on both ranks of the sp group, loss undivided
    loss.backward()
    worst = max(
        _relative(p.grad.full_tensor(), q.grad)
        for p, q in zip(model.parameters(), reference.parameters(), strict=True)
    )
    sharded = all(p.to_local().shape[0] < p.shape[0] for p in model.parameters() if p.shape[0] >= world)
    return {"loss": loss.item(), "ref_loss": ref_loss.item(), "grad": worst, "sharded": sharded}


def _worker(rank: int, world: int, init_file: str, result_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        results = {
            "prefix": _sp_case(rank, world, key_mask=False),
            "dense": _sp_case(rank, world, key_mask=True),
            "fsdp": _fsdp_sp_case(rank, world),
            "fsdp_vsa": _fsdp_sp_case(rank, world, _vsa_model(), _vsa_inputs(_vsa_model().config, True)),
            **{name: _window_case(rank, world, *case) for name, case in WINDOW_CASES.items()},
            **{name: _vsa_case(rank, world, masked) for name, masked in VSA_CASES.items()},
            **{name: _refiner_case(rank, world, masked) for name, masked in REFINER_CASES.items()},
            "fsdp_refiner": _fsdp_sp_refiner_case(rank, world),
        }
        if rank == 0:
            torch.save(results, os.path.join(result_dir, "result.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_results() -> dict:
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_worker, args=(2, os.path.join(folder, "init"), folder), nprocs=2, join=True)
        return torch.load(os.path.join(folder, "result.pt"), weights_only=True)


@pytest.mark.parametrize("case", ["prefix", "dense", *WINDOW_CASES, *VSA_CASES])
def test_sp2_forward_and_gradients_match_one_process(two_rank_results, case):
    r = two_rank_results[case]
    assert r["shape"]
    assert r["video"] < 1e-5
    assert r["audio"] < 1e-5
    assert r["grad"] < 1e-5
    if case in WINDOW_CASES:
        assert r["window_effect"] > 1e-3
    if case in VSA_CASES:
        assert r["vsa_effect"] > 1e-3


@pytest.mark.parametrize("case", list(REFINER_CASES))
def test_sp2_refiner_forward_and_gradients_match_one_process(two_rank_results, case):
    r = two_rank_results[case]
    assert r["shape"] and r["video"] < 1e-5 and r["grad"] < 1e-5


@pytest.mark.parametrize("case", ["fsdp", "fsdp_vsa", "fsdp_refiner"])
def test_sp2_under_fsdp_with_checkpointing_matches_one_process(two_rank_results, case):
    r = two_rank_results[case]
    assert r["loss"] == pytest.approx(r["ref_loss"], rel=1e-5)
    assert r["sharded"]
    assert r["grad"] < 1e-5


def test_bad_arguments():
    model = scale_fixtures.make_model()
    with pytest.raises(TypeError, match="model must be a JointAudioVideoTransformer"):
        apply_sequence_parallel(torch.nn.Linear(2, 2), None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"torch\.distributed"):
        apply_sequence_parallel(model, None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="apply_sequence_parallel"):
        sequence_parallel_forward(model, torch.zeros(1), torch.zeros(1), timestep=None, text_tokens=None)
    kernel = UlyssesJointAttention(None, model.video.blocks[0].attention)  # type: ignore[arg-type]
    q = torch.zeros(1, 3, 4, 16)
    with pytest.raises(RuntimeError, match="ShardedKeys"):
        kernel(q, q, q, mask=None)
    assert ShardedKeys(3, 3, None).text_lengths is None and ShardedKeys(3, 3, None).dense is None
