"""Lightning ``fit`` on several processes with ``SkyReelsParallelStrategy`` (issue 15), launched the way
users launch it (``torchrun``), on CPU with gloo.

- sp = 2: both ranks of the sequence-parallel group read the same batches, and every step's loss equals
  the one-process run's (tiny joint model, task mixture, text dropout, EMA, clipping; 1e-5 relative).
- dp = 2: the two replicas read disjoint batches (the bucket sampler shards them), take the same number
  of steps, and the losses stay finite.
- exact resume of a sharded run (dp = 2, FSDP2, EMA): 2 steps with a sharded ``last.ckpt`` after
  each, then a second launch that finds and resumes it, read the uninterrupted run's batches, give its
  losses and end with its EMA shadows; ``ExportModel`` gathers those shadows into one plain model
  folder (the next stage's ``init_from``).
- the refiner of paper 4.5 (``RefinerLightningModule``, VSA with a sparsity ramp): the same two runs.
  Its sampler deals the items of one global order round-robin, so the two dp replicas' first step
  reads exactly the one-process run's first two steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning_fit_worker
import pytest
import torch

from skyreels_v4.model import SkyReelsV4Transformer
from skyreels_v4.scale.checkpoint import load_sharded, read_extra, save_sharded
from skyreels_v4.text import EmbeddedTextEncoder, EmbeddedTextEncoderConfig
from skyreels_v4.training import build_latent_cache, world_samples
from skyreels_v4.vae import FrameAudioCodec, PixelShuffleVideoCodec
from skyreels_v4.world import WorldConfig

WORKER = Path(__file__).parent / "helpers" / "lightning_fit_worker.py"
STEPS = 3


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache")
    build_latent_cache(
        world_samples(WorldConfig(size=16, num_frames=9, sample_rate=16000), length=12, seed=0),
        out,
        video_vae=PixelShuffleVideoCodec(temporal_factor=4, spatial_factor=4),
        audio_vae=FrameAudioCodec(sample_rate=16000, hop_length=256),
        text_encoder=EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=32)),
        progress=False,
    )
    return out


def _launch(
    cache: Path | None, out: Path, *parallel: int | str, steps: int = STEPS, checkpoints: Path | None = None
) -> subprocess.CompletedProcess:
    """One worker run (under torchrun when ``parallel`` is given); ``cache`` None: the refiner run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # An earlier in-process seed_everything leaves PL_GLOBAL_SEED behind; Lightning's distributed
    # set-up would re-seed the workers from it (the one-process run would not), and the refiner draws
    # its sigmas from the global generator.
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        env.pop(name, None)
    kind, source = ("refiner", "-") if cache is None else ("joint", str(cache))
    layout, mode = parallel[:2], parallel[2:]  # mode: "full" = one-file checkpoints
    args = [str(WORKER), kind, source, str(out), str(steps), *map(str, layout)]
    if checkpoints is not None:
        args += [str(checkpoints), *mode]
    command = [sys.executable]
    if parallel:
        world = parallel[0] * parallel[1]
        command += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}"]
    return subprocess.run(command + args, env=env, capture_output=True, text=True, timeout=600)


def _reports(
    cache: Path | None, out: Path, *parallel: int | str, steps: int = STEPS, checkpoints: Path | None = None
):
    """The workers' reports."""
    done = _launch(cache, out, *parallel, steps=steps, checkpoints=checkpoints)
    assert done.returncode == 0, done.stderr[-4000:]
    world = parallel[0] * parallel[1] if parallel else 1
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
    assert all(r["world"] == world for r in reports)
    sp = parallel[1] if parallel else 1
    assert all(r["sp"] == sp for r in reports)  # the attention really is split over the sp group
    assert all(r["sharded"] == bool(parallel) for r in reports)  # FSDP2 sharded every weight
    return reports


def _run(cache: Path | None, out: Path, *parallel: int) -> list[list[dict]]:
    return [r["steps"] for r in _reports(cache, out, *parallel)]


@pytest.fixture(scope="module")
def single(cache_dir, tmp_path_factory) -> list[dict]:
    return _run(cache_dir, tmp_path_factory.mktemp("single"))[0]


def test_sp2_fit_equals_one_process(cache_dir, single, tmp_path):
    ranks = _run(cache_dir, tmp_path, 1, 2)
    assert len(single) == STEPS
    for rank in ranks:
        assert [s["items"] for s in rank] == [s["items"] for s in single]  # one sp group: same batches
        for got, want in zip(rank, single, strict=True):
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)


def test_dp2_fit_shards_the_batches(cache_dir, single, tmp_path):
    first, second = _run(cache_dir, tmp_path, 2, 1)
    assert len(first) == len(second) == STEPS
    seen_first = {i for s in first for i in s["items"]}
    seen_second = {i for s in second for i in s["items"]}
    assert not seen_first & seen_second  # 12 clips = 6 batches: 3 steps each, nothing read twice
    assert len(seen_first | seen_second) == 12
    # The shared epoch order dealt round-robin: replica 0 takes batches 0, 2, 4, replica 1 takes 1, 3, 5.
    assert (first[0]["items"], second[0]["items"], first[1]["items"]) == tuple(s["items"] for s in single)
    assert all(s["loss"] == s["loss"] and s["loss"] < 1e3 for s in first + second)


@pytest.fixture(scope="module")
def whole(cache_dir, tmp_path_factory) -> tuple[list[dict], Path]:
    """4 uninterrupted dp = 2 steps (sharded checkpoints after each, EMA exported at the end)."""
    out = tmp_path_factory.mktemp("whole")
    return _reports(cache_dir, out, 2, 1, steps=4, checkpoints=out / "ckpt"), out


def _resume_matches(cache_dir, tmp_path, whole, *mode: str) -> None:
    """2 steps, then a second launch that resumes for 2 more, equal the 4 uninterrupted steps."""
    first = _reports(cache_dir, tmp_path / "first", 2, 1, *mode, steps=2, checkpoints=tmp_path / "ckpt")
    resumed = _reports(cache_dir, tmp_path / "resumed", 2, 1, *mode, steps=4, checkpoints=tmp_path / "ckpt")
    for rank in range(2):
        assert whole[rank]["resumed_from"] is None and first[rank]["resumed_from"] is None
        assert resumed[rank]["resumed_from"] == "last.ckpt"
        assert len(first[rank]["steps"]) == len(resumed[rank]["steps"]) == 2
        for got, want in zip(
            first[rank]["steps"] + resumed[rank]["steps"], whole[rank]["steps"], strict=True
        ):
            assert got["items"] == want["items"]  # the data position per replica
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-6, abs=0)
        assert resumed[rank]["ema_checksum"] == pytest.approx(whole[rank]["ema_checksum"], rel=1e-6)
    assert whole[0]["ema_checksum"] != pytest.approx(first[0]["ema_checksum"], rel=1e-6)  # it moved


def test_full_file_checkpoint_resumes_exactly(cache_dir, whole, tmp_path):
    """``save_distributed_checkpoint=False``: one file from rank 0 with the gathered EMA, which a
    resumed sharded run splits into its shards again."""
    _resume_matches(cache_dir, tmp_path, whole[0], "full")
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()


def test_sharded_checkpoint_resumes_exactly(cache_dir, whole, tmp_path):
    whole, whole_out = whole
    _resume_matches(cache_dir, tmp_path, whole)
    # The sharded checkpoint: one DCP shard file per rank, plain data beside it.
    written = sorted(p.name for p in (tmp_path / "ckpt" / "last.ckpt").iterdir())
    assert written == [
        ".metadata", "__0_0.distcp", "__1_0.distcp", "skyreels_checkpoint.json", "trainer_state.pt"
    ]  # fmt: skip
    # ExportModel gathered the EMA weights from both ranks' shards into one plain model folder.
    exported = SkyReelsV4Transformer.from_pretrained(whole_out / "model")
    checksum = float(sum(p.detach().double().square().sum() for p in exported.parameters()))
    assert checksum == pytest.approx(whole[0]["ema_checksum"], rel=1e-6)
    # NaN in the checkpoint's weights: the resume stops, naming the folder and the tensor, on every rank.
    module, _, _ = lightning_fit_worker._joint(str(cache_dir))
    optimizer = module.configure_optimizers()["optimizer"]  # with the scheduler's param-group keys
    ema = {f"transformer.{n}": s for (n, _), s in zip(module.transformer.named_parameters(), module.ema)}
    folder = tmp_path / "ckpt" / "last.ckpt"
    load_sharded(folder, model=module, optimizer=optimizer, ema=ema)  # one plain process
    name, weight = next((n, p) for n, p in module.named_parameters() if p.dim() > 1)
    with torch.no_grad():
        weight[0] = float("nan")
    poisoned = tmp_path / "poisoned"
    poisoned.mkdir()
    save_sharded(poisoned / "last.ckpt", model=module, optimizer=optimizer, ema=ema, extra=read_extra(folder))
    done = _launch(cache_dir, tmp_path / "nan", 2, 1, steps=4, checkpoints=poisoned)
    assert done.returncode != 0
    assert f"{name} holds NaN/inf; do not use this model" in done.stderr


@pytest.fixture(scope="module")
def single_refiner(tmp_path_factory) -> list[dict]:
    return _run(None, tmp_path_factory.mktemp("single_refiner"))[0]


def test_sp2_refiner_fit_equals_one_process(single_refiner, tmp_path):
    ranks = _run(None, tmp_path, 1, 2)
    assert len(single_refiner) == STEPS
    for rank in ranks:
        assert [s["items"] for s in rank] == [s["items"] for s in single_refiner]
        for got, want in zip(rank, single_refiner, strict=True):
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)


def test_dp2_refiner_fit_shards_the_items(single_refiner, tmp_path):
    first, second = _run(None, tmp_path, 2, 1)
    assert len(first) == len(second) == STEPS
    # 8 items, batch 2, 2 replicas: 2 steps per epoch each; step 3 starts the next pass.
    epoch = [set(first[i]["items"]) | set(second[i]["items"]) for i in range(2)]
    assert not set(first[0]["items"]) & set(second[0]["items"])
    assert epoch[0] | epoch[1] == set(range(8))
    # Round-robin over one global order: replica 0 reads positions 0, 2 and replica 1 positions 1, 3,
    # i.e. together the one-process run's first two batches.
    one_process = single_refiner[0]["items"] + single_refiner[1]["items"]
    assert first[0]["items"] == one_process[0::2] and second[0]["items"] == one_process[1::2]
    assert all(s["loss"] == s["loss"] and s["loss"] < 1e3 for s in first + second)
