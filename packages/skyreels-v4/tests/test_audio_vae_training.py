"""The LightningModule (fast_dev_run, with and without a GAN) and the tiny recipe through LightningCLI,
including the ``ckpt_path: last`` resume."""

import copy
import itertools
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from skyreels_audio_vae import (
    AudioVAEConfig,
    AudioVAELossConfig,
    DiscriminatorConfig,
    MelLossConfig,
    MultiResolutionSTFTLossConfig,
    load_audio_vae,
)
from skyreels_v4.audio_vae import AudioFolderDataModule, AudioVAELightningModule
from skyreels_v4.audio_vae.train import main

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "audio_vae" / "tiny.yaml"
MICRO_VAE = {
    "encoder_channels": 4,
    "decoder_channels": 4,
    "channel_multipliers": [1, 2, 2, 2],
    "latent_channels": 4,
}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def audio_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "audio"
    root.mkdir()
    t = np.arange(22050) / 22050
    for i in range(10):
        clip = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.02 * rng.standard_normal(t.shape)
        sf.write(root / f"clip_{i}.wav", clip, 22050)
    return root


def _small_loss(adversarial: str) -> AudioVAELossConfig:
    return AudioVAELossConfig(
        stft=MultiResolutionSTFTLossConfig(fft_sizes=(512, 128)),
        mel=MelLossConfig(n_ffts=(512,), n_mels=(32,)),
        waveform_l1_weight=1.0,
        adversarial=adversarial,  # type: ignore[arg-type]
        discriminator=DiscriminatorConfig(
            periods=(2, 3), period_channels=(4, 8), stft_fft_sizes=(256,), stft_channels=4
        ),
    )


@pytest.mark.parametrize("adversarial", ["none", "hinge"])
def test_fast_dev_run_updates_the_vae(audio_folder, adversarial):
    torch.manual_seed(0)
    module = AudioVAELightningModule(
        vae=AudioVAEConfig(**MICRO_VAE | {"channel_multipliers": (1, 2, 2, 2)}), loss=_small_loss(adversarial)
    )
    before = copy.deepcopy(module.vae.state_dict())
    disc_before = copy.deepcopy(module.objective.discriminator.state_dict()) if module.adversarial else None
    data = AudioFolderDataModule(root=str(audio_folder), crop_samples=4096, batch_size=2, val_fraction=0.3)
    trainer = L.Trainer(
        fast_dev_run=1, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(module, datamodule=data)
    assert module.vae_steps == 1
    changed = [k for k, v in module.vae.state_dict().items() if not torch.equal(v, before[k])]
    assert any("conv_in" in k for k in changed) and any("snake" in k for k in changed)
    metrics = trainer.callback_metrics
    for key in ("train/mel", "train/stft_sc", "train/kl", "val/si_snr_db", "val/mel_distance"):
        assert key in metrics and torch.isfinite(metrics[key])
    if adversarial != "none":
        assert "train/discriminator" in metrics and "train/feature_matching" in metrics
        after = module.objective.discriminator.state_dict()
        assert any(not torch.equal(v, disc_before[k]) for k, v in after.items())


def test_tiny_recipe_trains_writes_artifacts_and_resumes_from_last(tmp_path, audio_folder):
    config = yaml.safe_load(RECIPE.read_text())
    assert config["ckpt_path"] == "last" and config["trainer"]["enable_progress_bar"] is True
    out = tmp_path / "run"
    config["model"]["vae"].update(MICRO_VAE)
    config["model"]["loss"]["stft"]["fft_sizes"] = [512, 128]
    config["model"]["loss"]["mel"] = {"n_ffts": [512], "n_mels": [32], "scale": "slaney"}
    config["data"].update(root=str(audio_folder), crop_samples=4096, batch_size=2, val_fraction=0.3)
    config["trainer"].update(
        max_steps=2,
        val_check_interval=2,
        limit_val_batches=1,
        default_root_dir=str(out),
        enable_progress_bar=False,
    )
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(out)
    dirpaths = {
        "ModelCheckpoint": out / "checkpoints",
        "LossCurvePlotter": out,
        "AudioReconstructionWriter": out / "reconstructions",
        "AudioVAEWeightsExporter": out / "weights",
    }
    for callback in config["trainer"]["callbacks"]:
        callback["init_args"]["dirpath"] = str(dirpaths[callback["class_path"].rsplit(".", 1)[1]])
        if callback["class_path"].endswith("ModelCheckpoint"):
            callback["init_args"]["every_n_train_steps"] = 1
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(config))

    cli = main(["fit", "--config", str(recipe)])
    assert cli.model.vae_steps == 2 and (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "loss_curves.png").stat().st_size > 10_000
    assert sorted(p.name for p in (out / "reconstructions").iterdir())[:2] == [
        "step000002_0_reconstruction.wav",
        "step000002_0_target.wav",
    ]
    init = load_audio_vae(out / "weights" / "init")
    final = load_audio_vae(out / "weights" / "final")
    assert not torch.equal(init.latent_std, final.latent_std)  # statistics were estimated at the end
    assert not torch.equal(init.decoder.conv_in.bias, final.decoder.conv_in.bias)
    first_init = (out / "weights" / "init" / "model.safetensors").read_bytes()

    cli = main(["fit", "--config", str(recipe), "--trainer.max_steps", "4"])
    assert cli.trainer.global_step == 4 and cli.model.vae_steps == 4  # continued from step 2
    plotter = next(c for c in cli.trainer.callbacks if type(c).__name__ == "LossCurvePlotter")
    steps = [s for s, _ in plotter.train_history["train/loss"]]
    assert steps == [1, 2, 3, 4]  # history restored from the checkpoint and extended
    assert (
        out / "weights" / "init" / "model.safetensors"
    ).read_bytes() == first_init  # not overwritten on resume


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    module = AudioVAELightningModule(
        vae=AudioVAEConfig(**MICRO_VAE | {"channel_multipliers": (1, 2, 2, 2)}),
        loss=_small_loss("none"),
        lr_schedule="cosine",
        warmup_steps=10,
        min_lr_ratio=0.1,
    )
    factors = [module.lr_factor(step, 110) for step in range(111)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[60] == pytest.approx(0.55)
    assert factors[110] == pytest.approx(0.1) and all(a >= b for a, b in itertools.pairwise(factors[10:]))
    with pytest.raises(ValueError, match="lr_schedule"):
        AudioVAELightningModule(vae=module.vae_config, loss=module.loss_config, lr_schedule="step")  # type: ignore[arg-type]


def test_base_recipe_parses_into_the_documented_configs(capsys):
    base = RECIPE.with_name("base.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(base), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["ckpt_path"] == "last"
    assert (
        printed["model"]["vae"]["strides"] == [2, 4, 8, 16] and printed["model"]["vae"]["audio_channels"] == 2
    )
    assert printed["model"]["loss"]["adversarial"] == "hinge"
    vae = AudioVAEConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in printed["model"]["vae"].items()}
    )
    assert vae.hop_length == 1024 and vae.latent_channels == 64
