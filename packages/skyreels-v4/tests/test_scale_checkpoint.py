"""Sharded checkpoints (issue 15): written by 2 FSDP2 ranks (gloo), read by 1 plain process and by 4
FSDP2 ranks; model, AdamW state and EMA equal the saved values exactly, and the next training step
gives the loss the 2-rank run gives (1e-5 relative: only the data-parallel summation order differs);
export to the pipeline's safetensors folder holds the EMA weights.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch.callbacks import ModelCheckpoint

from skyreels_v4.errors import FileFormatError
from skyreels_v4.model import SkyReelsV4Transformer, transformer_preset
from skyreels_v4.runs import find_last_checkpoint, read_checkpoint
from skyreels_v4.scale.checkpoint import (
    CHECKPOINT_INFO,
    complete_checkpoint,
    export_pretrained,
    load_sharded,
    read_extra,
    save_sharded,
)
from skyreels_v4.scale.parallelize import MixedPrecision, ParallelDims, build_device_mesh, parallelize

BATCH = 4


def make_model() -> SkyReelsV4Transformer:
    torch.manual_seed(0)
    model = SkyReelsV4Transformer(transformer_preset("tiny"))
    with torch.no_grad():  # no zero-initialised layer: every parameter gets a gradient and Adam state
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.05)
    return model


def make_batch(config, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "video": torch.randn(BATCH, config.video.in_channels, 2, 4, 4, generator=g),
        "audio": torch.randn(BATCH, config.audio.in_channels, 7, generator=g),
        "text": torch.randn(BATCH, 3, config.video.text_dim, generator=g),
        "t": torch.linspace(100.0, 900.0, BATCH),
        "target_v": torch.randn(BATCH, config.video.out_channels, 2, 4, 4, generator=g),
        "target_a": torch.randn(BATCH, config.audio.out_channels, 7, generator=g),
    }


def local_loss(model, b, rows: slice) -> torch.Tensor:
    out = model(b["video"][rows], b["audio"][rows], timestep=b["t"][rows], text_tokens=b["text"][rows])
    return (out.video - b["target_v"][rows]).square().mean() + (
        out.audio - b["target_a"][rows]
    ).square().mean()


def train_step(model, optimizer, ema, b, rank: int, world: int) -> float:
    """One AdamW step on this rank's rows, EMA update; returns the mean loss over the ranks."""
    per = BATCH // world
    loss = local_loss(model, b, slice(rank * per, (rank + 1) * per))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    with torch.no_grad():
        for shadow, p in zip(ema, model.parameters(), strict=True):
            shadow.lerp_(p.detach(), 0.1)
    value = loss.detach().clone()
    if world > 1:
        dist.all_reduce(value)
    return value.item() / world


def full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t.detach().clone()


def snapshot(model, optimizer, ema) -> dict:
    names = [n for n, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    return {
        "model": {n: full(params[n]) for n in names},
        "exp_avg_sq": {n: full(optimizer.state[params[n]]["exp_avg_sq"]) for n in names},
        "ema": {n: full(s) for n, s in zip(names, ema, strict=True)},
    }


def build(rank: int, world: int):
    model = make_model()
    if world > 1:
        parallelize(
            model, build_device_mesh(ParallelDims(dp_shard=world)), mixed_precision=MixedPrecision.FP32
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ema = [p.detach().clone() for p in model.parameters()]
    return model, optimizer, ema


def run(rank: int, world: int, folder: str, mode: str) -> dict:
    model, optimizer, ema = build(rank, world)
    config = model.config
    if mode == "save":
        train_step(model, optimizer, ema, make_batch(config, 1), rank, world)
        save_sharded(Path(folder) / "ckpt", model=model, optimizer=optimizer, ema=ema, step=1)
        saved = snapshot(model, optimizer, ema)
    else:
        info = load_sharded(Path(folder) / "ckpt", model=model, optimizer=optimizer, ema=ema)
        assert info["step"] == 1 and info["world_size"] == 2
        saved = snapshot(model, optimizer, ema)
    next_loss = train_step(model, optimizer, ema, make_batch(config, 2), rank, world)
    return {"state": saved, "next_loss": next_loss}


def _worker(rank: int, world: int, folder: str, mode: str) -> None:
    init = os.path.join(folder, f"init-{mode}")
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        result = run(rank, world, folder, mode)
        if rank == 0:
            torch.save(result, os.path.join(folder, f"{mode}.pt"))
    finally:
        dist.destroy_process_group()


def spawn(world: int, folder: Path, mode: str) -> dict:
    mp.spawn(_worker, args=(world, str(folder), mode), nprocs=world, join=True)
    return torch.load(folder / f"{mode}.pt", weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    for part in ("model", "exp_avg_sq", "ema"):
        assert a[part].keys() == b[part].keys()
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("dcp")
    return folder, spawn(2, folder, "save")


def test_two_ranks_resume_on_one_process(saved):
    folder, written = saved
    resumed = run(0, 1, str(folder), "load")  # plain model and optimizer, no process group
    assert_same_state(resumed["state"], written["state"])
    assert resumed["next_loss"] == pytest.approx(written["next_loss"], rel=1e-5)


def test_two_ranks_resume_on_four(saved):
    folder, written = saved
    resumed = spawn(4, folder, "load4")
    assert_same_state(resumed["state"], written["state"])
    assert resumed["next_loss"] == pytest.approx(written["next_loss"], rel=1e-5)


def test_export_to_pretrained_holds_the_ema(saved, tmp_path):
    folder, written = saved
    out = export_pretrained(folder / "ckpt", tmp_path / "model", transformer=make_model())
    loaded = SkyReelsV4Transformer.from_pretrained(out)
    for name, p in loaded.named_parameters():
        assert torch.equal(p, written["state"]["ema"][name]), name
    raw = export_pretrained(folder / "ckpt", tmp_path / "raw", transformer=make_model(), use_ema=False)
    p = dict(SkyReelsV4Transformer.from_pretrained(raw).named_parameters())
    assert all(torch.equal(p[n], v) for n, v in written["state"]["model"].items())


def test_bad_checkpoints(saved, tmp_path):
    folder, _ = saved
    model = make_model()
    with pytest.raises(FileFormatError, match="sharded checkpoint folder"):
        load_sharded(tmp_path / "missing", model=model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileFormatError, match=CHECKPOINT_INFO):
        load_sharded(tmp_path / "empty", model=model)
    tampered = tmp_path / "tampered"
    shutil.copytree(folder / "ckpt", tampered)
    with open(tampered / ".metadata", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(FileFormatError, match="SHA-256"):
        load_sharded(tampered, model=model)
    with pytest.raises(ValueError, match="step"):
        save_sharded(tmp_path / "x", model=model, step=-1)
    with pytest.raises(ValueError, match="ema"):
        save_sharded(tmp_path / "x", model=model, ema=[torch.zeros(1)])
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()
    poisoned = copy.deepcopy(model)
    name, weight = next((n, p) for n, p in poisoned.named_parameters() if p.dim() > 1)
    with torch.no_grad():
        weight[0, 0] = float("inf")
    save_sharded(tmp_path / "inf", model=poisoned)
    with pytest.raises(FileFormatError, match=rf"{name} holds NaN/inf; do not use this model"):
        load_sharded(tmp_path / "inf", model=copy.deepcopy(model))
    only_model = save_sharded(tmp_path / "m", model=copy.deepcopy(model))
    with pytest.raises(FileFormatError, match="optimizer was requested"):
        load_sharded(only_model, model=model, optimizer=torch.optim.AdamW(model.parameters()))


def test_extra_data_and_a_save_killed_before_its_rename(tmp_path):
    """``extra`` (the rest of a Lightning checkpoint) round-trips as plain data, is checked against its
    recorded SHA-256, and a complete ``.partial`` twin stands in for a folder removed by a killed save
    (what ``find_last_checkpoint`` resumes from), until the next save moves it into place."""
    model = make_model()
    extra = {"global_step": 3, "loops": {"fit_loop": {"epoch": 1}}, "rng": torch.arange(4)}
    folder = save_sharded(tmp_path / "last.ckpt", model=model, step=3, extra=extra)
    got = read_extra(folder)
    assert (
        got["global_step"] == 3 and got["loops"] == extra["loops"] and torch.equal(got["rng"], extra["rng"])
    )
    assert read_extra(save_sharded(tmp_path / "plain", model=model)) == {}
    assert complete_checkpoint(folder) == folder and complete_checkpoint(tmp_path / "nothing") is None
    # A kill between removing the old folder and renaming the new one leaves only the twin.
    twin = folder.with_name("last.ckpt.partial")
    folder.rename(twin)
    assert complete_checkpoint(folder) == twin
    trainer = SimpleNamespace(checkpoint_callbacks=[ModelCheckpoint(dirpath=tmp_path)])
    assert find_last_checkpoint(trainer) == folder
    assert read_checkpoint(folder)["global_step"] == 3  # the recipes' identity check reads it
    save_sharded(folder, model=model, step=4, extra={**extra, "global_step": 4})
    assert not twin.exists() and read_extra(folder)["global_step"] == 4
    # An incomplete twin (no info file: killed while writing) is never taken.
    shutil.rmtree(folder)
    twin.mkdir()
    assert complete_checkpoint(folder) is None and find_last_checkpoint(trainer) is None
    with pytest.raises(FileFormatError, match="not a complete sharded checkpoint"):
        read_checkpoint(twin)
    # Tampered or refused plain data is a typed error naming the file.
    shutil.rmtree(twin)
    folder = save_sharded(tmp_path / "t", model=model, extra=extra)
    with open(folder / "trainer_state.pt", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(FileFormatError, match=r"trainer_state\.pt.*SHA-256"):
        read_extra(folder)
    with pytest.raises(TypeError, match="extra: expected a dict"):
        save_sharded(tmp_path / "u", model=model, extra=[1])
