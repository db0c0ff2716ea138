"""Bad input, table-driven (issue 14): every case gets a typed error whose message names the argument or
file, and leaves nothing behind in its folder. Commands run through ``skyreels-v4`` (one line on
stderr, exit status 2); Python entry points raise.
"""

from __future__ import annotations

import math
import os
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from skyreels_attention import attention
from skyreels_audio_vae import (
    AudioVAEConfig,
    AudioVAELossConfig,
    MelLossConfig,
    MultiResolutionSTFTLossConfig,
)
from skyreels_flow_matching import TimestepSamplerConfig, noise_latents, sample_training_sigmas
from skyreels_refiner_vsa import VSAConfig
from skyreels_v4 import cli, guards, runs
from skyreels_v4.audio_vae import AudioFolderDataModule, AudioVAELightningModule, load_audio
from skyreels_v4.audio_vae.evaluate import load_checked_audio_vae
from skyreels_v4.errors import (
    ConfigMismatchError,
    FileFormatError,
    NonFiniteError,
    PreflightError,
)
from skyreels_v4.io import atomic_write_json, read_json, read_safetensors
from skyreels_v4.refiner import RefinerLightningModule, RefinerTripleDataModule

# ------------------------------------------------------------------------------------------ commands

A_FILE = "{tmp}/a_file"  # a plain file: any folder "inside" it cannot be created
CLI_CASES: list[tuple[str, list[str], str]] = [
    # (id, argv, text the one-line error must contain)
    ("efficiency-steps-negative", ["refiner-efficiency", "--steps", "50", "-1", "0"], "--steps"),
    ("efficiency-steps-zero", ["refiner-efficiency", "--steps", "0", "1", "1"], "--steps"),
    ("efficiency-steps-text", ["refiner-efficiency", "--steps", "a", "b", "c"], "--steps"),
    ("efficiency-steps-count", ["refiner-efficiency", "--steps", "1", "2"], "--steps"),
    ("efficiency-low-res-by", ["refiner-efficiency", "--low-res", "640by360"], "--low-res"),
    ("efficiency-low-res-zero", ["refiner-efficiency", "--low-res", "0x360"], "--low-res"),
    ("efficiency-low-res-negative", ["refiner-efficiency", "--low-res", "-640x360"], "--low-res"),
    ("efficiency-low-res-x", ["refiner-efficiency", "--low-res", "x"], "--low-res"),
    ("efficiency-sparsity-high", ["refiner-efficiency", "--sparsity", "1.5"], "--sparsity"),
    ("efficiency-sparsity-one", ["refiner-efficiency", "--sparsity", "1"], "--sparsity"),
    ("efficiency-sparsity-negative", ["refiner-efficiency", "--sparsity", "-0.1"], "--sparsity"),
    ("efficiency-sparsity-nan", ["refiner-efficiency", "--sparsity", "nan"], "--sparsity"),
    ("efficiency-keyframes-negative", ["refiner-efficiency", "--keyframes", "-1"], "--keyframes"),
    ("efficiency-text-tokens-negative", ["refiner-efficiency", "--text-tokens", "-5"], "--text-tokens"),
    ("efficiency-text-tokens-float", ["refiner-efficiency", "--text-tokens", "2.5"], "--text-tokens"),
    ("efficiency-preset", ["refiner-efficiency", "--preset", "huge"], "--preset"),
    ("gallery-num-clips-zero", ["world-gallery", "--out", "{tmp}/out", "--num-clips", "0"], "--num-clips"),
    (
        "gallery-num-clips-negative",
        ["world-gallery", "--out", "{tmp}/out", "--num-clips", "-3"],
        "--num-clips",
    ),
    ("gallery-num-clips-text", ["world-gallery", "--out", "{tmp}/out", "--num-clips", "abc"], "--num-clips"),
    ("gallery-size-zero", ["world-gallery", "--out", "{tmp}/out", "--size", "0"], "--size"),
    ("gallery-fps-zero", ["world-gallery", "--out", "{tmp}/out", "--fps", "0"], "--fps"),
    ("gallery-fps-nan", ["world-gallery", "--out", "{tmp}/out", "--fps", "nan"], "--fps"),
    ("gallery-fps-inf", ["world-gallery", "--out", "{tmp}/out", "--fps", "inf"], "--fps"),
    ("gallery-num-frames-zero", ["world-gallery", "--out", "{tmp}/out", "--num-frames", "0"], "--num-frames"),
    (
        "gallery-sample-rate-negative",
        ["world-gallery", "--out", "{tmp}/out", "--sample-rate", "-1"],
        "--sample-rate",
    ),
    (
        "gallery-audio-channels",
        ["world-gallery", "--out", "{tmp}/out", "--audio-channels", "3"],
        "--audio-channels",
    ),
    (
        "gallery-max-objects-zero",
        ["world-gallery", "--out", "{tmp}/out", "--max-objects", "0"],
        "--max-objects",
    ),
    (
        "gallery-montage-clips",
        ["world-gallery", "--out", "{tmp}/out", "--montage-clips", "-1"],
        "--montage-clips",
    ),
    (
        "gallery-montage-frames",
        ["world-gallery", "--out", "{tmp}/out", "--montage-frames", "0"],
        "--montage-frames",
    ),
    ("gallery-seed-negative", ["world-gallery", "--out", "{tmp}/out", "--seed", "-1"], "--seed"),
    ("gallery-split", ["world-gallery", "--out", "{tmp}/out", "--split", "holdout"], "--split"),
    ("gallery-out-missing", ["world-gallery"], "--out"),
    ("gallery-out-under-file", ["world-gallery", "--out", A_FILE + "/out", "--num-clips", "1"], "--out"),
    ("metrics-num-clips-zero", ["metrics-validate", "--num-clips", "0"], "--num-clips"),
    ("metrics-num-clips-text", ["metrics-validate", "--num-clips", "x"], "--num-clips"),
    ("metrics-seed-negative", ["metrics-validate", "--seed", "-2"], "--seed"),
    (
        "data-voices-zero",
        ["audio-vae-data", "--out", "{tmp}/out", "--voices-per-sentence", "0"],
        "--voices-per-sentence",
    ),
    (
        "data-synthetic-train",
        ["audio-vae-data", "--out", "{tmp}/out", "--synthetic-train", "-1"],
        "--synthetic-train",
    ),
    (
        "data-synthetic-heldout",
        ["audio-vae-data", "--out", "{tmp}/out", "--synthetic-heldout", "x"],
        "--synthetic-heldout",
    ),
    (
        "data-max-sentences",
        ["audio-vae-data", "--out", "{tmp}/out", "--max-sentences", "0"],
        "--max-sentences",
    ),
    ("data-seed", ["audio-vae-data", "--out", "{tmp}/out", "--seed", "-1"], "--seed"),
    ("data-out-under-file", ["audio-vae-data", "--out", A_FILE + "/out", "--no-speech"], "--out"),
    (
        "eval-chunk-zero",
        ["audio-vae-eval", "--weights", "{tmp}/w", "--data", "{tmp}/d", "--chunk-latents", "0"],
        "--chunk-latents",
    ),
    (
        "eval-overlap-negative",
        ["audio-vae-eval", "--weights", "{tmp}/w", "--data", "{tmp}/d", "--overlap-latents", "-1"],
        "--overlap-latents",
    ),
    (
        "eval-overlap-ge-chunk",
        [
            "audio-vae-eval",
            "--weights",
            "{tmp}/w",
            "--data",
            "{tmp}/d",
            "--chunk-latents",
            "8",
            "--overlap-latents",
            "8",
        ],
        "--overlap-latents",
    ),
    (
        "eval-threads-zero",
        ["audio-vae-eval", "--weights", "{tmp}/w", "--data", "{tmp}/d", "--threads", "0"],
        "--threads",
    ),
    (
        "eval-agreement-negative",
        ["audio-vae-eval", "--weights", "{tmp}/w", "--data", "{tmp}/d", "--chunk-agreement", "-1"],
        "--chunk-agreement",
    ),
    (
        "eval-weights-missing",
        ["audio-vae-eval", "--weights", "{tmp}/nope", "--data", "{tmp}/d"],
        "{tmp}/nope",
    ),
    ("eval-weights-required", ["audio-vae-eval", "--data", "{tmp}/d"], "--weights"),
    ("eval-data-missing", ["audio-vae-eval", "--weights", "{tmp}/w", "--data", "{tmp}/nope"], "{tmp}/nope"),
    ("eval-data-empty", ["audio-vae-eval", "--weights", "{tmp}/w", "--data", "{tmp}/empty"], "{tmp}/empty"),
    ("eval-weights-corrupt", ["audio-vae-eval", "--weights", "{tmp}/w", "--data", "{tmp}/d"], "{tmp}/w"),
    (
        "eval-out-under-file",
        ["audio-vae-eval", "--weights", "{tmp}/w", "--data", "{tmp}/d", "--out", A_FILE + "/r.json"],
        "--out",
    ),
    (
        "train-max-steps-text",
        ["audio-vae-train", "fit", "--data.root", "{tmp}/d", "--trainer.max_steps", "abc"],
        "max_steps",
    ),
    ("train-on-nonfinite", ["refiner-train", "fit", "--on_nonfinite", "ignore"], "on_nonfinite"),
    ("train-fork-state", ["refiner-train", "fit", "--fork_state", "everything"], "fork_state"),
    (
        "train-batch-size-zero",
        [
            "refiner-train",
            "fit",
            "--model.vsa.sparsity",
            "0.5",
            "--trainer.default_root_dir",
            "{tmp}/out",
            "--data.batch_size",
            "0",
        ],
        "batch_size",
    ),
    ("unknown-command", ["render-everything"], "render-everything"),
]


@pytest.fixture
def command_folder(tmp_path):
    (tmp_path / "a_file").write_text("not a folder\n")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "config.json").write_text("{ not json")
    (tmp_path / "d").mkdir()
    (tmp_path / "empty").mkdir()
    sf.write(tmp_path / "d" / "clip.wav", np.zeros(2048, dtype=np.float32), 44100)
    return tmp_path


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(("argv", "named"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_command_errors_are_one_line_with_status_2(command_folder, capsys, argv, named):
    tmp = str(command_folder)
    before = _listing(command_folder)
    code = cli.main([a.replace("{tmp}", tmp) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    message = [line for line in err if "error:" in line]
    assert len(message) == 1 and message[0].startswith("skyreels-v4"), err
    assert "Traceback" not in "\n".join(err)
    assert named.replace("{tmp}", tmp) in message[0], message[0]
    assert _listing(command_folder) == before, "the failed command left files behind"


def test_debug_flag_shows_the_traceback(capsys):
    with pytest.raises(cli.CommandLineError, match="--steps"):
        cli.main(["--debug", "refiner-efficiency", "--steps", "1", "-1", "1"])


# ------------------------------------------------------------------------------------ Python APIs


@dataclass(frozen=True)
class Case:
    """``make(tmp)`` builds the inputs and returns the call that must fail."""

    id: str
    make: Callable[[Path], Callable[[], Any]]
    error: type[BaseException]
    named: str  # text the message must contain ("{tmp}" is the case's folder)


def _wav(path: Path, data: np.ndarray, rate: int = 22050) -> Path:
    sf.write(path, data, rate, subtype="FLOAT")
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file(tensors, str(path))
    return path


def _truncated(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _checkpoint(path: Path, payload: Any) -> Path:
    torch.save(payload, path)
    return path


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


MICRO_VAE = AudioVAEConfig(
    encoder_channels=4, decoder_channels=4, channel_multipliers=(1, 2, 2, 2), latent_channels=4
)
SMALL_LOSS = AudioVAELossConfig(
    stft=MultiResolutionSTFTLossConfig(fft_sizes=(512, 128)), mel=MelLossConfig(n_ffts=(512,), n_mels=(32,))
)


def _audio_root(tmp: Path) -> Path:
    root = tmp / "audio"
    root.mkdir(exist_ok=True)
    for i in range(6):
        _wav(root / f"c{i}.wav", 0.1 * np.sin(np.arange(8192) * (0.01 + i / 100)))
    return root


def _audio_data(tmp: Path, **kwargs: Any) -> AudioFolderDataModule:
    root = tmp / "audio"
    if not root.is_dir():
        _audio_root(tmp)
    return AudioFolderDataModule(**({"root": str(root), "crop_samples": 4096, "val_fraction": 0.3} | kwargs))


def _audio_module(**vae: Any) -> AudioVAELightningModule:
    config = AudioVAEConfig(**(MICRO_VAE.__dict__ | vae))
    return AudioVAELightningModule(vae=config, loss=SMALL_LOSS)


_REFINER: list[RefinerLightningModule] = []


def _refiner() -> RefinerLightningModule:
    if not _REFINER:
        _REFINER.append(RefinerLightningModule(vsa=VSAConfig(sparsity=0.5)))
    return _REFINER[0]


def _refiner_data(**kwargs: Any) -> RefinerTripleDataModule:
    return RefinerTripleDataModule(**({"num_train": 8, "num_val": 4} | kwargs))


NAN = float("nan")
PY_CASES = [
    # --- loaded media
    Case(
        "audio-missing",
        lambda t: lambda: load_audio(t / "no.wav", sample_rate=44100, channels=1),
        FileFormatError,
        "{tmp}/no.wav",
    ),
    Case(
        "audio-corrupt",
        lambda t: (
            p := _bytes(t / "bad.wav", b"RIFF\x00garbage" * 10),
            lambda: load_audio(p, sample_rate=44100, channels=1),
        )[1],
        FileFormatError,
        "{tmp}/bad.wav",
    ),
    Case(
        "audio-empty",
        lambda t: (p := _wav(t / "e.wav", np.zeros(0)), lambda: load_audio(p, sample_rate=44100, channels=1))[
            1
        ],
        FileFormatError,
        "empty audio",
    ),
    Case(
        "audio-nan",
        lambda t: (
            p := _wav(t / "n.wav", np.array([0.1, NAN, 0.2] * 100)),
            lambda: load_audio(p, sample_rate=22050, channels=1),
        )[1],
        NonFiniteError,
        "{tmp}/n.wav",
    ),
    Case(
        "audio-inf",
        lambda t: (
            p := _wav(t / "i.wav", np.array([0.1, math.inf] * 100)),
            lambda: load_audio(p, sample_rate=22050, channels=1),
        )[1],
        NonFiniteError,
        "{tmp}/i.wav",
    ),
    Case(
        "audio-rate-zero",
        lambda t: (p := _wav(t / "a.wav", np.zeros(100)), lambda: load_audio(p, sample_rate=0, channels=1))[
            1
        ],
        ValueError,
        "sample_rate",
    ),
    Case(
        "audio-channels-zero",
        lambda t: (
            p := _wav(t / "a.wav", np.zeros(100)),
            lambda: load_audio(p, sample_rate=22050, channels=0),
        )[1],
        ValueError,
        "channels",
    ),
    Case(
        "audio-3-to-2-channels",
        lambda t: (
            p := _wav(t / "a.wav", np.zeros((100, 3))),
            lambda: load_audio(p, sample_rate=22050, channels=2),
        )[1],
        FileFormatError,
        "{tmp}/a.wav",
    ),
    Case("audio-folder-missing", lambda t: lambda: runs_list_audio(t / "nope"), FileNotFoundError, "root"),
    # --- weights and JSON files
    Case(
        "safetensors-missing",
        lambda t: lambda: read_safetensors(t / "m.safetensors"),
        FileFormatError,
        "{tmp}/m.safetensors",
    ),
    Case(
        "safetensors-empty",
        lambda t: (p := _bytes(t / "m.safetensors", b""), lambda: read_safetensors(p))[1],
        FileFormatError,
        "{tmp}/m.safetensors",
    ),
    Case(
        "safetensors-truncated",
        lambda t: (
            p := _truncated(_safetensors(t / "m.safetensors", {"w": torch.ones(64, 64)}), 0.5),
            lambda: read_safetensors(p),
        )[1],
        FileFormatError,
        "truncated",
    ),
    Case(
        "safetensors-huge-header",
        lambda t: (
            p := _bytes(t / "m.safetensors", struct.pack("<Q", 10**12) + b"{}"),
            lambda: read_safetensors(p),
        )[1],
        FileFormatError,
        "{tmp}/m.safetensors",
    ),
    Case(
        "safetensors-garbage-header",
        lambda t: (
            p := _bytes(t / "m.safetensors", struct.pack("<Q", 4) + b"{{{{"),
            lambda: read_safetensors(p),
        )[1],
        FileFormatError,
        "corrupt",
    ),
    Case(
        "safetensors-nan",
        lambda t: (
            p := _safetensors(t / "m.safetensors", {"w": torch.tensor([1.0, NAN])}),
            lambda: read_safetensors(p, check_finite=True),
        )[1],
        NonFiniteError,
        "'w'",
    ),
    Case(
        "safetensors-missing-key",
        lambda t: (
            p := _safetensors(t / "m.safetensors", {"w": torch.ones(2)}),
            lambda: read_safetensors(p, keys=["v"]),
        )[1],
        FileFormatError,
        "'v'",
    ),
    Case(
        "json-missing", lambda t: lambda: read_json(t / "config.json"), FileFormatError, "{tmp}/config.json"
    ),
    Case(
        "json-corrupt",
        lambda t: (p := _bytes(t / "config.json", b'{"a": '), lambda: read_json(p))[1],
        FileFormatError,
        "{tmp}/config.json",
    ),
    Case(
        "json-binary",
        lambda t: (p := _bytes(t / "config.json", b"\xff\xfe\x00"), lambda: read_json(p))[1],
        FileFormatError,
        "{tmp}/config.json",
    ),
    Case(
        "json-write-nan", lambda t: lambda: atomic_write_json(t / "r.json", {"x": NAN}), ValueError, "r.json"
    ),
    Case(
        "weights-folder-missing",
        lambda t: lambda: load_checked_audio_vae(t / "w"),
        FileFormatError,
        "{tmp}/w",
    ),
    Case(
        "weights-config-corrupt",
        lambda t: (
            (t / "w").mkdir(),
            _bytes(t / "w" / "config.json", b"{"),
            lambda: load_checked_audio_vae(t / "w"),
        )[2],
        FileFormatError,
        "{tmp}/w",
    ),
    Case(
        "weights-nan",
        lambda t: (_nan_weights(t / "w"), lambda: load_checked_audio_vae(t / "w"))[1],
        NonFiniteError,
        "{tmp}/w",
    ),
    # --- checkpoints
    Case(
        "ckpt-missing",
        lambda t: lambda: runs.read_checkpoint(t / "last.ckpt"),
        FileFormatError,
        "{tmp}/last.ckpt",
    ),
    Case(
        "ckpt-empty",
        lambda t: (p := _bytes(t / "last.ckpt", b""), lambda: runs.read_checkpoint(p))[1],
        FileFormatError,
        "{tmp}/last.ckpt",
    ),
    Case(
        "ckpt-truncated",
        lambda t: (
            p := _truncated(_checkpoint(t / "last.ckpt", _lightning_like()), 0.6),
            lambda: runs.read_checkpoint(p),
        )[1],
        FileFormatError,
        "delete last.ckpt",
    ),
    Case(
        "ckpt-garbage",
        lambda t: (p := _bytes(t / "last.ckpt", os.urandom(4096)), lambda: runs.read_checkpoint(p))[1],
        FileFormatError,
        "{tmp}/last.ckpt",
    ),
    Case(
        "ckpt-pickled-code",
        lambda t: (p := _pickle(t / "last.ckpt"), lambda: runs.read_checkpoint(p))[1],
        FileFormatError,
        "weights_only",
    ),
    Case(
        "ckpt-not-lightning",
        lambda t: (p := _checkpoint(t / "last.ckpt", {"w": torch.ones(1)}), lambda: runs.read_checkpoint(p))[
            1
        ],
        FileFormatError,
        "state_dict",
    ),
    Case(
        "ckpt-not-dict",
        lambda t: (p := _checkpoint(t / "last.ckpt", [1, 2]), lambda: runs.read_checkpoint(p))[1],
        FileFormatError,
        "{tmp}/last.ckpt",
    ),
    Case(
        "ckpt-older-listed",
        lambda t: (
            _checkpoint(t / "step=2.ckpt", _lightning_like()),
            p := _bytes(t / "last.ckpt", b"PK\x03\x04junk"),
            lambda: runs.read_checkpoint(p),
        )[2],
        FileFormatError,
        "step=2.ckpt",
    ),
    # --- guards
    Case(
        "finite-nan-tensor",
        lambda t: lambda: guards.check_finite(torch.tensor([1.0, NAN]), "latents"),
        NonFiniteError,
        "latents",
    ),
    Case(
        "finite-inf-tensor",
        lambda t: lambda: guards.check_finite(torch.tensor([math.inf]), "waveform"),
        NonFiniteError,
        "waveform",
    ),
    Case("finite-nan-float", lambda t: lambda: guards.check_finite(NAN, "loss"), NonFiniteError, "loss"),
    Case("finite-not-tensor", lambda t: lambda: guards.check_finite("x", "sigma"), TypeError, "sigma"),
    Case(
        "finite-state",
        lambda t: lambda: guards.check_finite_state({"a.w": torch.tensor([NAN])}, "model.safetensors"),
        NonFiniteError,
        "'a.w'",
    ),
    Case("finite-switch-type", lambda t: lambda: guards.set_finite_checks(1), TypeError, "enabled"),
    Case("guard-policy", lambda t: lambda: guards.NonFiniteGuard("maybe"), ValueError, "on_nonfinite"),
    # --- runs
    Case("sampler-length", lambda t: lambda: runs.ResumableSampler(0, seed=0), ValueError, "length"),
    Case("sampler-seed", lambda t: lambda: runs.ResumableSampler(4, seed="0"), TypeError, "seed"),
    Case(
        "sampler-per-epoch",
        lambda t: lambda: runs.ResumableSampler(4, seed=0, per_epoch=5),
        ValueError,
        "per_epoch",
    ),
    Case(
        "loader-batch-size",
        lambda t: lambda: runs.dataloader(list(range(4)), batch_size=0, seed=0),
        ValueError,
        "batch_size",
    ),
    Case(
        "loader-workers",
        lambda t: lambda: runs.dataloader(list(range(4)), batch_size=1, seed=0, num_workers=-1),
        ValueError,
        "num_workers",
    ),
    Case(
        "loader-too-small",
        lambda t: lambda: runs.dataloader(list(range(3)), batch_size=4, seed=0, drop_last=True),
        ValueError,
        "dataset",
    ),
    Case(
        "loader-not-sized",
        lambda t: lambda: runs.dataloader(iter(range(3)), batch_size=1, seed=0),
        TypeError,
        "dataset",
    ),
    Case("rng-malformed", lambda t: lambda: runs.restore_rng({"python": {}}), ValueError, "rng state"),
    Case(
        "config-mismatch",
        lambda t: (
            lambda: runs.check_same_run(
                {"data.sample_rate": 16000}, {"data.sample_rate": 44100}, checkpoint="last.ckpt"
            )
        ),
        ConfigMismatchError,
        "data.sample_rate",
    ),
    Case(
        "config-mismatch-fork-hint",
        lambda t: lambda: runs.check_same_run({"model.lr": 1}, {"model.lr": 2}, checkpoint="x/last.ckpt"),
        ConfigMismatchError,
        "--fork_from x/last.ckpt",
    ),
    Case(
        "writable-under-file",
        lambda t: (
            _bytes(t / "f", b"x"),
            lambda: runs.check_writable(t / "f" / "out", "trainer.default_root_dir"),
        )[1],
        PreflightError,
        "trainer.default_root_dir",
    ),
    Case(
        "writable-is-file",
        lambda t: (_bytes(t / "f", b"x"), lambda: runs.check_writable(t / "f", "--out"))[1],
        PreflightError,
        "{tmp}/f",
    ),
    Case(
        "matches",
        lambda t: lambda: runs.check_matches("data.sample_rate", 16000, "model.vae.sample_rate", 44100),
        PreflightError,
        "model.vae.sample_rate=44100",
    ),
    # --- audio VAE recipe pieces
    Case(
        "audio-data-crop",
        lambda t: (_audio_root(t), lambda: _audio_data(t, crop_samples=1000))[1],
        ValueError,
        "crop_samples",
    ),
    Case(
        "audio-data-val-fraction",
        lambda t: (_audio_root(t), lambda: _audio_data(t, val_fraction=1.5))[1],
        ValueError,
        "val_fraction",
    ),
    Case(
        "audio-data-batch",
        lambda t: (_audio_root(t), lambda: _audio_data(t, batch_size=0))[1],
        ValueError,
        "batch_size",
    ),
    Case(
        "audio-data-workers",
        lambda t: (_audio_root(t), lambda: _audio_data(t, num_workers=-1))[1],
        ValueError,
        "num_workers",
    ),
    Case(
        "audio-data-rate",
        lambda t: (_audio_root(t), lambda: _audio_data(t, sample_rate=0))[1],
        ValueError,
        "sample_rate",
    ),
    Case(
        "audio-data-rms",
        lambda t: (_audio_root(t), lambda: _audio_data(t, min_crop_rms=-1.0))[1],
        ValueError,
        "min_crop_rms",
    ),
    Case(
        "audio-data-tries",
        lambda t: (_audio_root(t), lambda: _audio_data(t, crop_tries=0))[1],
        ValueError,
        "crop_tries",
    ),
    Case(
        "audio-preflight-rate",
        lambda t: (d := _audio_data(t, sample_rate=16000), lambda: d.preflight(_audio_module()))[1],
        PreflightError,
        "data.sample_rate",
    ),
    Case(
        "audio-preflight-channels",
        lambda t: (d := _audio_data(t, audio_channels=2), lambda: d.preflight(_audio_module()))[1],
        PreflightError,
        "data.audio_channels",
    ),
    Case(
        "audio-preflight-root",
        lambda t: (
            lambda: AudioFolderDataModule(root=str(t / "nope"), crop_samples=4096).preflight(_audio_module())
        ),
        PreflightError,
        "data.root",
    ),
    Case(
        "audio-preflight-empty",
        lambda t: (
            (t / "e").mkdir(),
            lambda: AudioFolderDataModule(root=str(t / "e"), crop_samples=4096).preflight(_audio_module()),
        )[1],
        PreflightError,
        "data.root",
    ),
    Case(
        "audio-preflight-nan-file",
        lambda t: (
            d := _audio_data(t),
            _wav(t / "audio" / "zz.wav", np.array([NAN] * 64)),
            lambda: d.preflight(_audio_module()),
        )[2],
        NonFiniteError,
        "zz.wav",
    ),
    Case(
        "audio-module-schedule",
        lambda t: lambda: AudioVAELightningModule(vae=MICRO_VAE, loss=SMALL_LOSS, lr_schedule="linear"),
        ValueError,
        "lr_schedule",
    ),
    Case(
        "audio-module-warmup",
        lambda t: lambda: AudioVAELightningModule(vae=MICRO_VAE, loss=SMALL_LOSS, warmup_steps=-1),
        ValueError,
        "warmup_steps",
    ),
    Case(
        "audio-module-vae-type",
        lambda t: lambda: AudioVAELightningModule(vae={"a": 1}, loss=SMALL_LOSS),
        TypeError,
        "vae",
    ),
    # --- refiner recipe pieces
    Case(
        "refiner-data-channels",
        lambda t: lambda: _refiner_data(latent_channels=0),
        ValueError,
        "latent_channels",
    ),
    Case(
        "refiner-data-shape-even-t",
        lambda t: lambda: _refiner_data(high_res_shape=(8, 16, 16)),
        ValueError,
        "high_res_shape",
    ),
    Case(
        "refiner-data-shape-len",
        lambda t: lambda: _refiner_data(high_res_shape=(16, 16)),
        ValueError,
        "high_res_shape",
    ),
    Case(
        "refiner-data-keyframes",
        lambda t: lambda: _refiner_data(keyframe_indices=(0, 9)),
        ValueError,
        "keyframe_indices",
    ),
    Case(
        "refiner-data-inpaint",
        lambda t: lambda: _refiner_data(inpaint_probability=2.0),
        ValueError,
        "inpaint_probability",
    ),
    Case("refiner-data-batch", lambda t: lambda: _refiner_data(batch_size=0), ValueError, "batch_size"),
    Case("refiner-data-text", lambda t: lambda: _refiner_data(text_tokens=0), ValueError, "text_tokens"),
    Case(
        "refiner-preflight-channels",
        lambda t: lambda: _refiner_data(latent_channels=8).preflight(_refiner()),
        PreflightError,
        "data.latent_channels",
    ),
    Case(
        "refiner-preflight-text",
        lambda t: lambda: _refiner_data(text_dim=16).preflight(_refiner()),
        PreflightError,
        "data.text_dim",
    ),
    Case(
        "refiner-preflight-patch",
        lambda t: (
            lambda: _refiner_data(high_res_shape=(9, 15, 16), keyframe_indices=(0,)).preflight(_refiner())
        ),
        ValueError,
        "high_res_shape",
    ),
    Case(
        "refiner-black-latent",
        lambda t: lambda: RefinerLightningModule(vsa=VSAConfig(sparsity=0.5), black_latent="x"),
        TypeError,
        "black_latent",
    ),
    Case(
        "refiner-black-latent-count",
        lambda t: lambda: RefinerLightningModule(vsa=VSAConfig(sparsity=0.5), black_latent=[0.0, 1.0, 2.0]),
        ValueError,
        "black_latent",
    ),
    Case(
        "refiner-vsa-unknown-key",
        lambda t: lambda: RefinerLightningModule(vsa={"sparsity": 0.5, "cubes": [4, 4, 4]}),
        ValueError,
        "vsa",
    ),
    # --- lower-layer entry points reachable from skyreels_v4
    Case(
        "flow-sigma-shape",
        lambda t: lambda: noise_latents(torch.zeros(2, 4, 3, 8, 8), torch.zeros(3)),
        ValueError,
        "sigma",
    ),
    Case(
        "flow-batch-size",
        lambda t: lambda: sample_training_sigmas(0, TimestepSamplerConfig()),
        ValueError,
        "batch_size",
    ),
    Case(
        "attention-kv-shapes",
        lambda t: (
            lambda: attention(torch.zeros(1, 4, 2, 8), torch.zeros(1, 4, 2, 8), torch.zeros(1, 4, 3, 8))
        ),
        ValueError,
        "k, v",
    ),
]


def runs_list_audio(path: Path) -> Any:
    from skyreels_v4.audio_vae import list_audio_files

    return list_audio_files(path)


def _lightning_like() -> dict[str, Any]:
    return {"state_dict": {"w": torch.randn(256, 256)}, "global_step": 3, "loops": {}}


def _pickle(path: Path) -> Path:
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": _Evil()}, handle)
    return path


def _nan_weights(folder: Path) -> None:
    from skyreels_audio_vae import AudioVAE, save_audio_vae

    model = AudioVAE(MICRO_VAE)
    with torch.no_grad():
        next(model.parameters()).fill_(NAN)
    save_audio_vae(model, folder)


@pytest.mark.parametrize("case", PY_CASES, ids=[c.id for c in PY_CASES])
def test_python_entry_points_raise_typed_errors_naming_the_input(tmp_path, case):
    call = case.make(tmp_path)
    before = _listing(tmp_path)
    with pytest.raises(case.error) as info:
        call()
    assert case.named.replace("{tmp}", str(tmp_path)) in str(info.value), str(info.value)
    assert _listing(tmp_path) == before, "the failed call left files behind"


def test_the_table_is_large_enough():
    assert len(CLI_CASES) + len(PY_CASES) >= 100
    assert len({c[0] for c in CLI_CASES} | {c.id for c in PY_CASES}) == len(CLI_CASES) + len(PY_CASES)
