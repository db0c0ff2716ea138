"""DiffusersVideoVae over tiny random diffusers Wan / HunyuanVideo VAEs built here: normalisation against
the raw diffusers calls by hand, architecture-derived factors, the causal first frame, tiling, temporal
chunks, batch slicing, and the folder round trip (diffusers subfolder + our config)."""

from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from skyreels_inpaint_conditioning import VideoVae  # noqa: E402
from skyreels_v4.errors import ConfigMismatchError, FileFormatError, SkyReelsError  # noqa: E402
from skyreels_v4.vae import (  # noqa: E402
    DiffusersVaeKind,
    DiffusersVideoVae,
    VideoTilingConfig,
    diffusers_vae_factors,
    load_video_codec,
)

MEAN = [0.1, -0.2, 0.3, -0.4]
STD = [0.5, 1.5, 2.0, 0.8]


def _wan(dim_mult=(1, 1, 1, 1), temporal=(False, True, True)):
    torch.manual_seed(0)
    return diffusers.AutoencoderKLWan(
        base_dim=4,
        z_dim=4,
        dim_mult=list(dim_mult),
        num_res_blocks=1,
        temperal_downsample=list(temporal),
        latents_mean=MEAN,
        latents_std=STD,
    ).eval()


def _hunyuan():
    torch.manual_seed(0)
    return diffusers.AutoencoderKLHunyuanVideo(
        latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4
    ).eval()


def _pixels(batch: int = 2, frames: int = 5, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_wan_normalisation_matches_the_raw_call_by_hand() -> None:
    vae = _wan()
    codec = DiffusersVideoVae(vae)
    assert isinstance(codec, VideoVae) and codec.kind is DiffusersVaeKind.WAN
    assert (codec.temporal_factor, codec.spatial_factor, codec.latent_channels) == (4, 8, 4)
    pixels = _pixels()
    mean, std = torch.tensor(MEAN).view(1, 4, 1, 1, 1), torch.tensor(STD).view(1, 4, 1, 1, 1)
    with torch.no_grad():
        raw = vae.encode(pixels).latent_dist.mode()
        latents = codec.encode(pixels)
        torch.testing.assert_close(latents, (raw - mean) / std)
        decoded = codec.decode(latents)
        by_hand = vae.decode(latents * std + mean).sample.clamp(-1, 1)
    assert latents.shape == (2, 4, 2, 2, 2)
    torch.testing.assert_close(decoded, by_hand)
    assert decoded.shape == pixels.shape


def test_hunyuan_scaling_factor() -> None:
    vae = _hunyuan()
    codec = DiffusersVideoVae(vae)
    assert (codec.temporal_factor, codec.spatial_factor, codec.latent_channels) == (4, 8, 4)
    pixels = _pixels(batch=1)
    with torch.no_grad():
        raw = vae.encode(pixels).latent_dist.mode()
        latents = codec.encode(pixels)
        torch.testing.assert_close(latents, raw * vae.config.scaling_factor, rtol=1e-5, atol=1e-6)
        # decode undoes the scaling (latents / s), which differs from raw by an ulp (about 3e-8); the
        # random decoder amplifies that to a few 1e-5 on some CPUs' kernels. A wrong factor is off by
        # far more than 1e-4.
        torch.testing.assert_close(
            codec.decode(latents), vae.decode(raw).sample.clamp(-1, 1), rtol=1e-4, atol=1e-4
        )


def test_factors_come_from_the_architecture_not_the_config() -> None:
    vae = _wan(dim_mult=(1, 1, 1), temporal=(False, True, False))  # config still says 4 / 8
    assert vae.config.scale_factor_spatial == 8
    assert diffusers_vae_factors(vae) == (2, 4, 4)
    codec = DiffusersVideoVae(vae)
    with torch.no_grad():
        latents = codec.encode(_pixels(batch=1, frames=5, size=8))
    assert latents.shape == (1, 4, 3, 2, 2)  # measured: T = 1 + 4 // 2, h = 8 / 4


def test_wan_statistics_length_must_match_z_dim() -> None:
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLWan(base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    with pytest.raises(ConfigMismatchError, match=r"latents_mean: expected 4 values.*got 16"):
        DiffusersVideoVae(vae)
    codec = DiffusersVideoVae(vae, latents_mean=MEAN, latents_std=STD)
    torch.testing.assert_close(codec.latent_std, torch.tensor(STD))
    with pytest.raises(TypeError, match="vae: expected a diffusers"):
        DiffusersVideoVae(torch.nn.Linear(2, 2))


def test_first_latent_is_the_image_encoded_alone() -> None:
    # Wan only: diffusers' HunyuanVideo VAE normalises with GroupNorm over (T, H, W), so its latent 0
    # depends on later frames (measured: differences up to 0.16 here; docs/vae.md).
    codec = DiffusersVideoVae(_wan())
    pixels = _pixels(batch=1, frames=9)
    with torch.no_grad():
        clip = codec.encode(pixels)
        alone = codec.encode(pixels[:, :, :1])
    assert clip.shape[2] == 3 and alone.shape[2] == 1
    torch.testing.assert_close(clip[:, :, :1], alone, rtol=1e-4, atol=1e-5)


def test_frame_count_that_diffusers_would_floor_raises() -> None:
    codec = DiffusersVideoVae(_wan())
    with pytest.raises(SkyReelsError, match="got 16; crop to 13 or pad to 17"):
        codec.encode(_pixels(batch=1, frames=16))


def test_tiling_exact_when_covering_and_close_otherwise() -> None:
    vae = _wan()
    plain = DiffusersVideoVae(vae)
    pixels = _pixels(batch=1, frames=5, size=64)  # 8x8 latent cells
    with torch.no_grad():
        latents = plain.encode(pixels)
        reference = plain.decode(latents)
        covering = DiffusersVideoVae(vae, tiling=VideoTilingConfig(tile_latents=8, overlap_latents=2))
        assert torch.equal(covering.decode(latents), reference)
        assert torch.equal(covering.encode(pixels), latents)
        tiled = DiffusersVideoVae(vae, tiling=VideoTilingConfig(tile_latents=4, overlap_latents=2))
        result = tiled.decode(latents)
        encoded = tiled.encode(pixels)
    # Stated tolerance: random-weight tiny Wan, 4-cell tiles with 2-cell overlap (docs/vae.md).
    assert result.shape == reference.shape
    assert (result - reference).abs().mean() < 0.05
    assert (encoded - latents).abs().mean() < 0.1 * latents.abs().mean() + 1e-3
    assert not torch.equal(result, reference)


def test_temporal_chunks_and_batch_slices() -> None:
    vae = _wan()
    plain = DiffusersVideoVae(vae)
    latents = torch.randn(2, 4, 5, 2, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = plain.decode(latents)
        sliced = DiffusersVideoVae(vae, tiling=VideoTilingConfig(batch_slice=1)).decode(latents)
        chunked = DiffusersVideoVae(
            vae, tiling=VideoTilingConfig(temporal_chunk_latents=2, temporal_context_latents=2)
        ).decode(latents)
    assert reference.shape == chunked.shape == (2, 3, 17, 16, 16)
    torch.testing.assert_close(sliced, reference, rtol=0, atol=1e-4)  # batched-conv rounding only
    # Chunk 0 is decoded exactly as in the whole clip (causal decoder).
    torch.testing.assert_close(chunked[:, :, :5], reference[:, :, :5], rtol=0, atol=1e-4)
    assert (chunked - reference).abs().mean() < 0.1


@pytest.mark.parametrize("make", [_wan, _hunyuan])
def test_save_load_round_trip(tmp_path, make) -> None:
    tiling = VideoTilingConfig(tile_latents=4, overlap_latents=1)
    codec = DiffusersVideoVae(make(), tiling=tiling)
    folder = codec.save_pretrained(tmp_path / "codec")
    config = json.loads((folder / "config.json").read_text())
    assert config["class"] == "DiffusersVideoVae" and (folder / "vae" / "config.json").is_file()
    assert list((folder / "vae").glob("*.safetensors"))
    loaded = load_video_codec(folder)
    assert isinstance(loaded, DiffusersVideoVae) and loaded.tiling == tiling and loaded.kind is codec.kind
    pixels = _pixels(batch=1)
    with torch.no_grad():
        assert torch.equal(loaded.encode(pixels), codec.encode(pixels))
    again = DiffusersVideoVae.from_diffusers_folder(folder)  # the repo root holding vae/
    assert again.latent_channels == 4
    as_double = load_video_codec(folder, dtype=torch.float64)
    assert next(as_double.vae.parameters()).dtype == torch.float64
    (folder / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(FileFormatError, match="_class_name"):
        DiffusersVideoVae.from_diffusers_folder(folder / "vae")
