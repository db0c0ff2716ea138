import json

import pytest
import torch

from skyreels_audio_vae import AudioVAE, load_audio_vae, save_audio_vae


def test_save_load_round_trip_keeps_weights_statistics_and_config(tmp_path, micro_config, randomize):
    model = randomize(AudioVAE(micro_config(audio_channels=2, scale_parameterization="exp")))
    model.set_latent_statistics(torch.arange(4.0), torch.arange(1.0, 5.0))
    save_audio_vae(model, tmp_path / "vae")
    assert sorted(p.name for p in (tmp_path / "vae").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_audio_vae(tmp_path / "vae")
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    x = torch.randn(1, 2, 2048)
    torch.testing.assert_close(loaded.encode_normalized(x), model.encode_normalized(x), rtol=0, atol=0)


def test_load_rejects_unknown_config_keys_and_missing_files(tmp_path, micro_config):
    save_audio_vae(AudioVAE(micro_config()), tmp_path)
    payload = json.loads((tmp_path / "config.json").read_text())
    payload["config"]["heads"] = 3
    (tmp_path / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="unknown AudioVAEConfig keys \\['heads'\\]"):
        load_audio_vae(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_audio_vae(tmp_path / "nowhere")
