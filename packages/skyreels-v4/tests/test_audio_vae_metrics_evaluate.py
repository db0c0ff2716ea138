"""Reconstruction metrics (values) and the evaluation command."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from skyreels_audio_vae import AudioVAE, AudioVAEConfig, save_audio_vae
from skyreels_v4.audio_vae import ReconstructionMetrics
from skyreels_v4.audio_vae.evaluate import evaluate_weights, main


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_metrics_values_on_known_signals():
    torch.manual_seed(0)
    target = torch.randn(2, 1, 8192)
    metrics = ReconstructionMetrics(sample_rate=44100)
    perfect = metrics(target, target)
    assert perfect.si_snr_db > 60 and perfect.mel_distance == 0 and perfect.stft_distance == 0
    halved = metrics(0.5 * target, target)
    assert halved.si_snr_db > 60  # scale invariant
    assert halved.stft_distance.item() == pytest.approx(0.5 + math.log(2), rel=1e-3)
    noise = torch.randn(2, 1, 8192)
    noise -= (noise * target).sum(-1, keepdim=True) / (target * target).sum(-1, keepdim=True) * target
    noise *= 0.1 * target.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True)
    assert metrics(target + noise, target).si_snr_db.item() == pytest.approx(20.0, abs=0.1)


def test_evaluate_command_reports_per_kind_and_chunking_agrees(tmp_path, capsys):
    torch.manual_seed(0)
    config = AudioVAEConfig(
        encoder_channels=4, decoder_channels=4, channel_multipliers=(1, 2, 2, 2), latent_channels=4
    )
    save_audio_vae(AudioVAE(config), tmp_path / "weights")
    data = tmp_path / "heldout"
    data.mkdir()
    rng = np.random.default_rng(0)
    sf.write(data / "speech_00.wav", 0.1 * rng.standard_normal(30000), 22050)
    sf.write(data / "tone_00.wav", 0.3 * np.sin(np.arange(44100) * 0.05), 44100)
    assert (
        main(["--weights", str(tmp_path / "weights"), "--data", str(data), "--out", str(tmp_path / "r.json")])
        == 0
    )
    printed = capsys.readouterr().out
    assert "| speech | 1 |" in printed and "| tone | 1 |" in printed and "| all | 2 |" in printed
    result = json.loads((tmp_path / "r.json").read_text())[str(tmp_path / "weights")]
    assert set(result) == {"speech", "tone", "all"}
    assert result["all"]["si_snr_db"] == pytest.approx(
        (result["speech"]["si_snr_db"] + result["tone"]["si_snr_db"]) / 2
    )
    chunked = evaluate_weights(tmp_path / "weights", data, chunk_latents=16, overlap_latents=8)
    for kind in ("speech", "tone"):
        assert chunked[kind]["mel_distance"] == pytest.approx(result[kind]["mel_distance"], rel=0.05)
