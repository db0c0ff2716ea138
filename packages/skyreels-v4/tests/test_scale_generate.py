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


def _worker(rank: int, world: int, port: int, folder: str, model: str) -> None:
    os.environ.update(
        {"WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
         "MASTER_PORT": str(port)}
    )  # fmt: skip
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
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
