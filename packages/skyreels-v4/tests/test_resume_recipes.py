"""Exact resume of the audio VAE and refiner tiny recipes after a real SIGKILL (issue 14).

Per recipe, two runs of the documented command (``fit --config ...``, ``ckpt_path: last``) in child
processes: an uninterrupted one, and one that is killed with SIGKILL twice (mid-epoch, 1 step after
a checkpoint, and at an epoch boundary, right after the checkpoint of the epoch's last batch) and
rerun each time with the same command. The per-step losses and the final weights must be equal
bit for bit. All four chains run concurrently to keep the file's wall time down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from skyreels_v4.audio_vae.data import is_validation_file

ROOT = Path(__file__).resolve().parents[3]
TESTS = Path(__file__).resolve().parent
BATCHES_PER_EPOCH = 4
MAX_STEPS = 7
KILL_STEPS = [3, 4]  # checkpoints every 2 steps: 3 = mid-epoch (resumes from 2), 4 = epoch boundary


def _audio_folder(root: Path) -> Path:
    """Clips until 8 land in training (4 batches of 2) and 2 in validation."""
    rng = np.random.default_rng(0)
    folder = root / "audio"
    folder.mkdir(parents=True)
    t = np.arange(11025) / 22050
    train = val = i = 0
    while train < 8 or val < 2:
        name = f"clip_{i:02d}.wav"
        i += 1
        is_val = is_validation_file(name, 0.3)
        if (is_val and val >= 2) or (not is_val and train >= 8):
            continue
        train, val = train + (not is_val), val + is_val
        clip = 0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t) + 0.05 * rng.standard_normal(t.shape)
        sf.write(folder / name, clip, 22050)
    return folder


def _common(config: dict, out: Path, kill: list[int] | None) -> dict:
    trainer = config["trainer"]
    trainer.update(
        max_steps=MAX_STEPS,
        val_check_interval=3,
        limit_val_batches=1,
        check_val_every_n_epoch=None,
        default_root_dir=str(out),
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        max_time=None,
    )
    trainer["logger"]["init_args"]["save_dir"] = str(out)
    checkpoint = next(c for c in trainer["callbacks"] if c["class_path"].endswith("ModelCheckpoint"))
    checkpoint["init_args"].update(dirpath=str(out / "checkpoints"), every_n_train_steps=2)
    trainer["callbacks"] = [
        checkpoint,
        {"class_path": "test_resume_helpers.StepLossLog", "init_args": {"path": str(out / "losses.jsonl")}},
    ]
    if kill:
        trainer["callbacks"].append(
            {
                "class_path": "test_resume_helpers.KillAtStep",
                "init_args": {"steps": kill, "marker_dir": str(out)},
            }
        )
    return config


def _audio_config(root: Path, out: Path, kill: list[int] | None) -> dict:
    config = yaml.safe_load((ROOT / "recipes" / "audio_vae" / "tiny.yaml").read_text())
    config["model"]["vae"].update(
        encoder_channels=4, decoder_channels=4, channel_multipliers=[1, 2, 2, 2], latent_channels=4
    )
    config["model"]["loss"]["stft"]["fft_sizes"] = [512, 128]
    config["model"]["loss"]["mel"] = {"n_ffts": [512], "n_mels": [32], "scale": "slaney"}
    config["data"].update(root=str(root / "audio"), crop_samples=4096, batch_size=2, val_fraction=0.3)
    return _common(config, out, kill)


def _refiner_config(root: Path, out: Path, kill: list[int] | None) -> dict:
    config = yaml.safe_load((ROOT / "recipes" / "refiner" / "tiny.yaml").read_text())
    config["data"].update(num_train=4 * BATCHES_PER_EPOCH + 1, num_val=4, batch_size=4, num_workers=2)
    config["model"]["sparsity_ramp"]["steps"] = 4
    return _common(config, out, kill)


RECIPES = {
    "audio_vae": ("skyreels_v4.audio_vae.train", _audio_config),
    "refiner": ("skyreels_v4.refiner.train", _refiner_config),
}


def _run_chain(module: str, config_path: Path, attempts: int) -> list[int]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    env["OMP_NUM_THREADS"] = "1"
    codes = []
    for _ in range(attempts):
        result = subprocess.run(
            [sys.executable, "-m", module, "fit", "--config", str(config_path)],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        codes.append(result.returncode)
        if result.returncode not in (0, -9):
            raise AssertionError(f"{module} failed with {result.returncode}:\n{result.stderr[-4000:]}")
        if result.returncode == 0:
            break
    return codes


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    _audio_folder(root)
    jobs = {}
    for name, (module, make_config) in RECIPES.items():
        for kind, kill in (("whole", None), ("killed", KILL_STEPS)):
            out = root / f"{name}_{kind}"
            path = root / f"{name}_{kind}.yaml"
            path.write_text(yaml.safe_dump(make_config(root, out, kill)))
            jobs[name, kind] = (module, path, out, 1 if kill is None else len(kill) + 1)
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {
            key: pool.submit(_run_chain, module, path, n) for key, (module, path, _, n) in jobs.items()
        }
        codes = {key: future.result() for key, future in futures.items()}
    return {key: (codes[key], jobs[key][2]) for key in jobs}


def _losses(path: Path) -> dict[int, dict]:
    """The last record per global step (a killed run may have logged a step it then redid)."""
    records: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        records[record["step"]] = record
    return records


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_sigkill_mid_epoch_and_at_epoch_boundary_resumes_bit_for_bit(runs, recipe):
    whole_codes, whole = runs[recipe, "whole"]
    killed_codes, killed = runs[recipe, "killed"]
    assert whole_codes == [0]
    assert killed_codes == [-9, -9, 0], "both SIGKILLs happened and the third run finished"
    for step in KILL_STEPS:
        assert (killed / f"killed_at_{step}").exists()
    assert (killed / "killed_at_4").read_text().startswith("epoch 1 batch 0"), (
        "the second kill is at an epoch start"
    )
    reference, resumed = _losses(whole / "losses.jsonl"), _losses(killed / "losses.jsonl")
    assert sorted(reference) == list(range(1, MAX_STEPS + 1))
    assert {s: r["loss"] for s, r in resumed.items()} == {s: r["loss"] for s, r in reference.items()}
    assert {s: r["batch"] for s, r in resumed.items()} == {s: r["batch"] for s, r in reference.items()}
    # The final weights (last checkpoint of both runs) are identical too.
    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] > 0
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    run = json.loads((killed / "run.json").read_text())
    assert run["resumed_from"].endswith("last.ckpt")


def test_losses_differ_between_steps(runs):
    """Guards the test itself: equal logs would also hold if every step logged the same value."""
    reference = _losses(runs["refiner", "whole"][1] / "losses.jsonl")
    assert len({r["loss"] for r in reference.values()}) == MAX_STEPS
