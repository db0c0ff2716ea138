"""Distributed generation (issue 15): the tiny pipeline sampled with SP=2 over 2 CPU processes (gloo)
gives the single-process latents (1e-5 relative: fp32, only the attention summation order differs),
with classifier-free guidance on both modalities; only rank 0 writes; and the torchrun entry point
(``python -m skyreels_v4.scale.generate`` = ``skyreels-v4 generate`` arguments) writes one mp4.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from skyreels_v4.scale.generate import _rank_device, main, sequence_parallel_generate


def build_tiny_pipeline():
    """conftest's tiny pipeline (loaded by path: the repository root has a conftest.py too)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_v4_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_pipeline()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def _init_rank(rank: int, world: int, port: int) -> None:
    """torchrun's environment for ``rank`` of ``world``, one thread, the gloo group."""
    os.environ.update(
        {"WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
         "MASTER_PORT": str(port)}
    )  # fmt: skip
    torch.set_num_threads(1)
    dist.init_process_group("gloo")


def _worker(rank: int, world: int, port: int, folder: str, model: str) -> None:
    _init_rank(rank, world, port)
    request = {"prompt": "A red circle moves right. Audio: a low hum.", "task": "t2av", "seed": 3}
    reference = build_tiny_pipeline()(progress=False, **request)
    target = Path(folder) / f"sp-{rank}.mp4" if rank == 1 else Path(folder) / "sp.mp4"
    output = sequence_parallel_generate(build_tiny_pipeline(), out=target, progress=False, **request)
    result = {
        "video": _relative(output.video_latents, reference.video_latents),
        "audio": _relative(output.audio_latents, reference.audio_latents),
        "rank1_wrote": (Path(folder) / "sp-1.mp4").exists(),
    }
    status = main(["--model", model, "--prompt", request["prompt"], "--out", str(Path(folder) / "cli.mp4"),
                   "--steps", "1", "--seed", "0", "--quiet"])  # fmt: skip
    result["status"] = status
    torch.save(result, Path(folder) / f"rank{rank}.pt")


def test_sp2_generation_matches_one_process_and_rank0_writes(tmp_path, tiny_folder):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), str(tiny_folder)), nprocs=2, join=True)
    for rank in range(2):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert r["video"] < 1e-5 and r["audio"] < 1e-5
        assert not r["rank1_wrote"]
        assert r["status"] == 0
    assert (tmp_path / "sp.mp4").stat().st_size > 0
    assert (tmp_path / "cli.mp4").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".mp4") == ["cli.mp4", "sp.mp4"]


def test_errors_and_device_per_rank(monkeypatch):
    with pytest.raises(RuntimeError, match=r"torch\.distributed"):
        sequence_parallel_generate(None, "x")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert _rank_device(["--device", "cuda", "--x"]) == ["--device", "cuda:3", "--x"]
    assert _rank_device(["--device=cuda"]) == ["--device=cuda:3"]
    assert _rank_device(["--device", "cpu"]) == ["--device", "cpu"]


def _guidance_worker(rank: int, world: int, port: int, folder: str, model: str) -> None:
    import copy

    import scale_fixtures
    from skyreels_v4.scale.guidance_parallel import apply_guidance_parallel, generation_groups

    _init_rank(rank, world, port)
    result = {}
    # The pipeline: guidance on both modalities stacks cond + uncond (batch 2); each rank runs one.
    request = {"prompt": "A red circle moves right. Audio: a low hum.", "task": "t2av", "seed": 3}
    reference = build_tiny_pipeline()(progress=False, **request)
    pipe = build_tiny_pipeline()
    seen = []
    output = sequence_parallel_generate(pipe, guidance_parallel=2, progress=False, **request)
    pipe.transformer.register_forward_pre_hook(
        lambda m, a, k: seen.append(int(a[0].shape[0])), with_kwargs=True
    )
    again = sequence_parallel_generate(pipe, progress=False, **request)  # parallelism kept, not re-applied
    result["video"] = _relative(output.video_latents, reference.video_latents)
    result["audio"] = _relative(output.audio_latents, reference.audio_latents)
    result["again"] = _relative(again.video_latents, reference.video_latents)
    result["seen"] = sorted(set(seen))
    # A batch of 3 over 2 ranks (padded, then cut), with references and a 3-d keyword input.
    model_ = scale_fixtures.make_model()
    inputs = scale_fixtures.make_inputs(model_.config)
    inputs = {k: torch.cat([v, v[:1] * 0.5 if v.is_floating_point() else v[:1]]) for k, v in inputs.items()}
    plain = model_(**inputs)
    split = apply_guidance_parallel(copy.deepcopy(model_), dist.group.WORLD)(**inputs)
    result["batch3"] = max(_relative(a, b) for a, b in zip(split, plain, strict=True))
    result["batch3_shapes"] = [tuple(t.shape) for t in split] == [tuple(t.shape) for t in plain]
    try:
        generation_groups(3)
    except ValueError as error:
        result["error"] = str(error)
    out = str(Path(folder) / "cfg.mp4")
    status = main(["--guidance-parallel", "2", "--model", model, "--prompt", request["prompt"],
                   "--out", out, "--steps", "1", "--seed", "0", "--quiet"])  # fmt: skip
    result["status"] = status
    torch.save(result, Path(folder) / f"rank{rank}.pt")


def test_guidance_branches_split_over_two_ranks_give_the_one_process_latents(tmp_path, tiny_folder):
    mp.spawn(_guidance_worker, args=(2, _free_port(), str(tmp_path), str(tiny_folder)), nprocs=2, join=True)
    for rank in range(2):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert r["video"] < 1e-5 and r["audio"] < 1e-5 and r["again"] < 1e-5
        assert r["seen"] == [1]  # cond and uncond (batch 2) split: one sample per rank per call
        assert r["batch3"] < 1e-5 and r["batch3_shapes"]
        assert "guidance_parallel" in r["error"] and "world size 2" in r["error"]
        assert r["status"] == 0
    assert (tmp_path / "cfg.mp4").stat().st_size > 0


def test_guidance_parallel_defaults_and_flag():
    from skyreels_v4.scale.generate import _guidance_parallel_flag
    from skyreels_v4.scale.guidance_parallel import default_guidance_parallel

    # sp takes the largest size dividing both the world and the heads; the rest split guidance.
    assert [default_guidance_parallel(w, 4) for w in (1, 2, 4, 8, 6, 3)] == [1, 1, 1, 2, 3, 3]
    assert default_guidance_parallel(8, 24) == 1
    with pytest.raises(ValueError, match="world_size"):
        default_guidance_parallel(0, 4)
    assert _guidance_parallel_flag(["--guidance-parallel", "2", "--x"]) == (2, ["--x"])
    assert _guidance_parallel_flag(["--guidance-parallel=4"]) == (4, [])
    assert _guidance_parallel_flag(["--x"]) == (None, ["--x"])
    for bad in (["--guidance-parallel", "0"], ["--guidance-parallel"], ["--guidance-parallel=two"]):
        with pytest.raises(ValueError, match="--guidance-parallel"):
            _guidance_parallel_flag(bad)
    assert main(["--guidance-parallel", "0", "--model", "x"]) == 2


def _grid_worker(rank: int, world: int, port: int, folder: str) -> None:
    from skyreels_v4.scale.guidance_parallel import guidance_parallel_group
    from skyreels_v4.scale.sequence_parallel import sequence_parallel_group

    _init_rank(rank, world, port)
    request = {"prompt": "A red circle moves right. Audio: a low hum.", "task": "t2av", "seed": 3}
    reference = build_tiny_pipeline()(progress=False, **request)
    pipe = build_tiny_pipeline()
    seen = []
    pipe.transformer.register_forward_pre_hook(
        lambda m, a, k: seen.append(int(a[0].shape[0])), with_kwargs=True
    )
    output = sequence_parallel_generate(pipe, progress=False, **request)  # 4 ranks, 4 heads: automatic 1 x 4
    model = pipe.transformer
    result = {
        "video": _relative(output.video_latents, reference.video_latents),
        "audio": _relative(output.audio_latents, reference.audio_latents),
        "auto_sp": dist.get_world_size(sequence_parallel_group(model)),
        "auto_guidance": guidance_parallel_group(model) is None,  # size 1: not applied
    }
    pipe = build_tiny_pipeline()
    output = sequence_parallel_generate(pipe, guidance_parallel=2, progress=False, **request)  # 2 x 2
    model = pipe.transformer
    result["grid_video"] = _relative(output.video_latents, reference.video_latents)
    result["grid_audio"] = _relative(output.audio_latents, reference.audio_latents)
    result["sp_ranks"] = dist.get_process_group_ranks(sequence_parallel_group(model))
    result["guidance_ranks"] = dist.get_process_group_ranks(guidance_parallel_group(model))
    torch.save(result, Path(folder) / f"rank{rank}.pt")


def test_four_ranks_as_guidance_2_x_sp_2_give_the_one_process_latents(tmp_path):
    mp.spawn(_grid_worker, args=(4, _free_port(), str(tmp_path)), nprocs=4, join=True)
    for rank in range(4):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert r["video"] < 1e-5 and r["audio"] < 1e-5
        assert r["auto_sp"] == 4 and r["auto_guidance"]
        assert r["grid_video"] < 1e-5 and r["grid_audio"] < 1e-5
        g = rank // 2  # rank = g * sp + s
        assert r["sp_ranks"] == [2 * g, 2 * g + 1]
        assert r["guidance_ranks"] == [rank % 2, rank % 2 + 2]


def _refined_pipeline():
    """The tiny pipeline with a refiner (VSA in every block, guidance 2: a batch of 2 per step), whose
    zero-initialised weights are redrawn so that every part of it acts."""
    from skyreels_refiner_vsa import VSAConfig
    from skyreels_v4.pipeline.refine import RefineConfig, RefinerComponent

    pipe = build_tiny_pipeline()
    torch.manual_seed(1)
    pipe.refiner = RefinerComponent.from_base(
        pipe.transformer,
        vsa=VSAConfig(sparsity=0.5, backend="torch"),
        config=RefineConfig(num_steps=2, guidance=2.0),
    )
    with torch.no_grad():
        for parameter in pipe.refiner.refiner.parameters():
            if not bool(parameter.any()):
                parameter.normal_(0.0, 0.05)
    return pipe


def _refine_worker(rank: int, world: int, port: int, folder: str) -> None:
    from skyreels_v4.scale.sequence_parallel import sequence_parallel_group

    _init_rank(rank, world, port)
    request = {"prompt": "A red circle moves right.", "task": "t2v", "seed": 4, "refine_to": (64, 64)}
    reference = _refined_pipeline()(progress=False, **request)
    pipe = _refined_pipeline()
    calls = []
    pipe.refiner.refiner.register_forward_pre_hook(lambda m, a: calls.append(1))
    output = sequence_parallel_generate(pipe, progress=False, **request)
    result = {
        "video": _relative(output.video_latents, reference.video_latents),
        "shape": tuple(output.video_latents.shape) == tuple(reference.video_latents.shape),
        "refiner_sp": dist.get_world_size(sequence_parallel_group(pipe.refiner.refiner)),
        "refiner_calls": len(calls),
    }
    torch.save(result, Path(folder) / f"rank{rank}.pt")


def test_the_refiner_of_the_efficient_path_is_sequence_parallel_too(tmp_path):
    """``refine_to`` under SP=2: the refiner is sharded over the transformer's group, and the
    high-resolution latents equal one process's."""
    mp.spawn(_refine_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert r["shape"] and r["video"] < 1e-5
        assert r["refiner_sp"] == 2 and r["refiner_calls"] > 0
