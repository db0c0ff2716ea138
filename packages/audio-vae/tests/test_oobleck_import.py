"""Oobleck import: numerically identical to diffusers' AutoencoderOobleck, and stable-audio-tools names
(built here from the published module structure) land where they belong, with every key accounted for."""

import pytest
import torch
from diffusers import AutoencoderOobleck

from skyreels_audio_vae import (
    AudioVAE,
    AudioVAEConfig,
    audio_vae_preset,
    infer_oobleck_config,
    load_oobleck_weights,
    oobleck_module_names,
)

# diffusers builds Oobleck with the deprecated torch.nn.utils.weight_norm (old weight_g/weight_v names,
# which is what public checkpoints contain); its deprecation warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*:FutureWarning")

CONFIG = AudioVAEConfig(
    audio_channels=2,
    encoder_channels=8,
    decoder_channels=8,
    channel_multipliers=(1, 2),
    strides=(2, 4),
    latent_channels=4,
)


def _tiny_diffusers_oobleck(seed: int = 0) -> AutoencoderOobleck:
    torch.manual_seed(seed)
    model = AutoencoderOobleck(
        encoder_hidden_size=8,  # diffusers ties the encoder output width (2 x latent) to this
        downsampling_ratios=[2, 4],
        channel_multiples=[1, 2],
        decoder_channels=8,
        decoder_input_channels=4,
        audio_channels=2,
    ).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("alpha", "beta")):
                p.normal_(0.0, 0.3)  # non-default Snake parameters, so a mix-up would show
            elif name.endswith("weight_g"):
                p.uniform_(0.3, 1.0)
    return model


def _diffusers_to_stable_audio_tools(name: str) -> str:
    """stable-audio-tools names from the published structure: nn.Sequential ``layers`` everywhere.

    Encoder: layers = [conv, EncoderBlock x n, snake, conv]; EncoderBlock.layers = [ResUnit(1),
    ResUnit(3), ResUnit(9), snake, strided conv]. Decoder: layers = [conv, DecoderBlock x n, snake,
    conv]; DecoderBlock.layers = [snake, transposed conv, ResUnit x 3]. ResUnit.layers = [snake,
    conv k7, snake, conv k1]. Snake parameters are 1-D there.
    """
    side, rest = name.split(".", 1)
    n = 2
    unit = {"snake1": "0", "conv1": "1", "snake2": "2", "conv2": "3"}
    parts = rest.split(".")
    if parts[0] == "block":
        i, module = int(parts[1]), parts[2]
        if module.startswith("res_unit"):
            j = int(module[-1]) - 1
            slot = j if side == "encoder" else 2 + j
            inner = unit[parts[3]]
            return f"{side}.layers.{i + 1}.layers.{slot}.layers.{inner}.{'.'.join(parts[4:])}"
        slot = {"encoder": {"snake1": 3, "conv1": 4}, "decoder": {"snake1": 0, "conv_t1": 1}}[side][module]
        return f"{side}.layers.{i + 1}.layers.{slot}.{'.'.join(parts[3:])}"
    top = {"conv1": 0, "snake1": n + 1, "conv2": n + 2}[parts[0]]
    return f"{side}.layers.{top}.{'.'.join(parts[1:])}"


def _stable_audio_tools_state_dict(public: AutoencoderOobleck) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in public.state_dict().items():
        if key.endswith(("alpha", "beta")):
            value = value.reshape(-1)
        out[_diffusers_to_stable_audio_tools(key)] = value.clone()
    return out


def _assert_same_outputs(ours: AudioVAE, public: AutoencoderOobleck) -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 2, 8 * 8) * 0.5
    with torch.no_grad():
        theirs = public.encode(x).latent_dist
        posterior = ours.encode(x)
        torch.testing.assert_close(posterior.mean, theirs.mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(posterior.std, theirs.std, rtol=1e-5, atol=1e-5)
        z = torch.randn(2, 4, 5)
        torch.testing.assert_close(ours.decode(z), public.decode(z).sample, rtol=1e-5, atol=1e-5)


def test_diffusers_naming_reproduces_autoencoder_oobleck():
    public = _tiny_diffusers_oobleck()
    ours = AudioVAE(CONFIG).eval()
    report = load_oobleck_weights(ours, public.state_dict(), naming="diffusers")
    assert report.ok and not report.missing and not report.unexpected and report.outside_prefix == 0
    assert len(report.loaded) == len([k for k in ours.state_dict() if not k.startswith("latent_")])
    _assert_same_outputs(ours, public)


def test_stable_audio_tools_naming_loads_every_key_into_its_place():
    public = _tiny_diffusers_oobleck(seed=3)
    sat = _stable_audio_tools_state_dict(public)
    assert "encoder.layers.0.weight_g" in sat and "encoder.layers.1.layers.0.layers.1.weight_v" in sat
    assert "decoder.layers.1.layers.1.weight_v" in sat and sat["encoder.layers.3.alpha"].ndim == 1
    ours = AudioVAE(CONFIG).eval()
    # the full Stable Audio Open checkpoint nests the VAE under this prefix next to the diffusion model
    full = {f"pretransform.model.{k}": v for k, v in sat.items()} | {
        "model.model.transformer.w": torch.zeros(1)
    }
    report = load_oobleck_weights(ours, full, naming="stable_audio_tools", prefix="pretransform.model.")
    assert report.ok and report.outside_prefix == 1
    params = dict(ours.named_parameters())
    torch.testing.assert_close(
        params["encoder.blocks.1.downsample.parametrizations.weight.original1"],
        sat["encoder.layers.2.layers.4.weight_v"],
    )
    torch.testing.assert_close(
        params["decoder.blocks.0.residual_units.2.conv1.parametrizations.weight.original0"],
        sat["decoder.layers.1.layers.4.layers.1.weight_g"],
    )
    torch.testing.assert_close(params["decoder.snake_out.beta"], sat["decoder.layers.3.beta"])
    _assert_same_outputs(ours, public)
    assert infer_oobleck_config(sat) == CONFIG


def test_missing_unexpected_and_mismatched_keys_are_reported_not_ignored():
    sat = _stable_audio_tools_state_dict(_tiny_diffusers_oobleck())
    del sat["decoder.layers.2.layers.3.layers.3.bias"]
    sat["encoder.layers.9.weight_v"] = torch.zeros(1)
    sat["decoder.layers.0.bias"] = torch.zeros(7)
    ours = AudioVAE(CONFIG)
    with pytest.raises(ValueError, match=r"missing=.*decoder\.blocks\.1\.residual_units\.1\.conv2\.bias"):
        load_oobleck_weights(ours, sat)
    report = load_oobleck_weights(ours, sat, strict=False)
    assert report.missing == ("decoder.blocks.1.residual_units.1.conv2.bias", "decoder.conv_in.bias")
    assert report.unexpected == ("encoder.layers.9.weight_v",)
    assert report.shape_mismatches == ("decoder.layers.0.bias: (7,) vs ours decoder.conv_in.bias (16,)",)
    assert not report.ok


def test_folded_plain_weights_are_split_into_magnitude_and_direction():
    public = _tiny_diffusers_oobleck(seed=5)
    torch.nn.utils.remove_weight_norm(public.encoder.conv1)  # now a plain ``weight``
    ours = AudioVAE(CONFIG).eval()
    assert load_oobleck_weights(ours, public.state_dict(), naming="diffusers").ok
    torch.testing.assert_close(ours.encoder.conv_in.weight, public.encoder.conv1.weight, rtol=1e-6, atol=1e-6)
    _assert_same_outputs(ours, public)


def test_stable_audio_open_names_cover_the_whole_model():
    config = audio_vae_preset("stable_audio_open")
    names = oobleck_module_names(config, "stable_audio_tools")
    assert names["encoder.conv_out"] == "encoder.layers.7" and names["decoder.conv_out"] == "decoder.layers.7"
    assert names["encoder.blocks.4.downsample"] == "encoder.layers.5.layers.4"
    assert names["decoder.blocks.0.residual_units.0.conv1"] == "decoder.layers.1.layers.2.layers.1"
    with torch.device("meta"):
        model = AudioVAE(config)
    owners = {
        n.split(".parametrizations.")[0] if ".parametrizations." in n else n.rsplit(".", 1)[0]
        for n, _ in model.named_parameters()
    }
    assert owners == set(names)
