"""Video codecs: PixelShuffleVideoCodec (exact inversion), TinyVideoAutoencoder (causality, round trip,
folders), tiling and temporal chunking against untiled references, validation and the registry."""

from __future__ import annotations

import json

import pytest
import torch

from skyreels_inpaint_conditioning import VideoVae, black_image_latent
from skyreels_v4.errors import FileFormatError, NonFiniteError, SkyReelsError
from skyreels_v4.vae import (
    PixelShuffleVideoCodec,
    TinyVideoAutoencoder,
    TinyVideoAutoencoderConfig,
    VideoTilingConfig,
    load_video_codec,
    tile_windows,
)
from skyreels_v4.vae.tiling import blend_weights


def _pixels(batch: int = 2, frames: int = 9, size: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=generator) * 2 - 1


def _tiny(seed: int = 0, **kwargs) -> TinyVideoAutoencoder:
    torch.manual_seed(seed)
    model = TinyVideoAutoencoder(TinyVideoAutoencoderConfig(hidden_channels=16, num_res_blocks=1), **kwargs)
    # Non-trivial residual branches and statistics, so that every code path changes the values.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.normal_(0, 0.2)
        model.set_latent_statistics(torch.linspace(-0.5, 0.5, 8), torch.linspace(0.5, 2.0, 8))
    return model.eval()


# -- PixelShuffleVideoCodec -----------------------------------------------------------------------


@pytest.mark.parametrize(("tf", "sf"), [(4, 4), (4, 8), (2, 2)])
def test_pixel_shuffle_inverts_exactly(tf: int, sf: int) -> None:
    codec = PixelShuffleVideoCodec(temporal_factor=tf, spatial_factor=sf)
    pixels = _pixels(frames=1 + 2 * tf, size=2 * sf)
    latents = codec.encode(pixels)
    assert latents.shape == (2, 3 * tf * sf * sf, 3, 2, 2)
    assert codec.latent_channels == 3 * tf * sf * sf
    assert torch.equal(codec.decode(latents), pixels)


def test_pixel_shuffle_layout_and_scale() -> None:
    codec = PixelShuffleVideoCodec(temporal_factor=4, spatial_factor=2, latent_scale=0.5)
    pixels = _pixels(batch=1, frames=5, size=4)
    latents = codec.encode(pixels)
    # channel order (colour, frame in group, row, column); latent 0 = frame 0 repeated.
    for g in range(4):
        assert torch.equal(latents[0, 1 * 16 + g * 4 + 1 * 2 + 0, 0, 1, 1], pixels[0, 1, 0, 3, 2] / 0.5)
        assert torch.equal(latents[0, 2 * 16 + g * 4 + 0 * 2 + 1, 1, 0, 1], pixels[0, 2, 1 + g, 0, 3] / 0.5)
    # decoding arbitrary latents gives frame 0 = the mean of group 0's slots
    noise = torch.randn_like(latents)
    first = codec.decode(noise.clamp(-1, 1))[:, :, 0]
    slots = (noise.clamp(-1, 1) * 0.5).view(1, 3, 4, 2, 2, 2, 2, 2)[:, :, :, :, :, 0]
    expected = slots.mean(dim=2).permute(0, 1, 4, 2, 5, 3).reshape(1, 3, 4, 4)
    torch.testing.assert_close(first, expected.clamp(-1, 1))


def test_pixel_shuffle_is_a_video_vae_and_gives_the_black_latent() -> None:
    codec = PixelShuffleVideoCodec()
    assert isinstance(codec, VideoVae)
    black = black_image_latent(codec, height=8, width=8)
    assert torch.equal(black, torch.full((1, 192, 1, 2, 2), -2.0))


# -- TinyVideoAutoencoder -------------------------------------------------------------------------


def test_tiny_is_causal_and_first_latent_is_the_image_alone() -> None:
    model = _tiny()
    pixels = _pixels(frames=13)
    with torch.no_grad():
        latents = model.encode(pixels)
        alone = model.encode(pixels[:, :, :1])
        changed = pixels.clone()
        changed[:, :, 6:] = -changed[:, :, 6:]  # frames 6.. belong to latents 2, 3
        latents_changed = model.encode(changed)
    assert latents.shape == (2, 8, 4, 4, 4)
    assert torch.equal(latents[:, :, :1], alone)
    assert torch.equal(latents[:, :, :1], latents_changed[:, :, :1])
    assert torch.equal(latents[:, :, 1], latents_changed[:, :, 1])  # frames 1-4 unchanged
    assert not torch.equal(latents[:, :, 2], latents_changed[:, :, 2])


def test_tiny_normalisation_and_decode_shape() -> None:
    model = _tiny()
    pixels = _pixels(frames=5)
    with torch.no_grad():
        raw = model.encode_groups(model.frames_to_groups(pixels))  # [B*T, C, h, w]
        latents = model.encode(pixels)
        decoded = model.decode(latents)
        by_hand = model.groups_to_frames(model.decode_groups(raw), 2).clamp(-1, 1)
    mean, std = model.latent_mean.view(1, -1, 1, 1), model.latent_std.view(1, -1, 1, 1)
    expected = ((raw - mean) / std).view(2, 2, 8, 4, 4).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(latents, expected)
    assert decoded.shape == pixels.shape and decoded.abs().max() <= 1
    torch.testing.assert_close(
        decoded, by_hand, rtol=1e-3, atol=1e-3
    )  # z -> (z-m)/s -> z rounding, amplified


@pytest.mark.parametrize("sf", [4, 8])
def test_tiny_save_load_round_trip(tmp_path, sf: int) -> None:
    torch.manual_seed(1)
    model = TinyVideoAutoencoder(
        TinyVideoAutoencoderConfig(spatial_factor=sf, hidden_channels=8, latent_channels=4)
    )
    model.set_latent_statistics(torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    folder = model.save_pretrained(tmp_path / "tiny")
    assert json.loads((folder / "config.json").read_text())["class"] == "TinyVideoAutoencoder"
    loaded = load_video_codec(folder)
    assert isinstance(loaded, TinyVideoAutoencoder) and loaded.config == model.config
    pixels = _pixels(frames=5, size=16)
    with torch.no_grad():
        assert torch.equal(loaded.encode(pixels), model.eval().encode(pixels))
    half = TinyVideoAutoencoder.from_pretrained(folder, dtype=torch.float64)
    assert half.latent_mean.dtype == torch.float64
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- tiling -----------------------------------------------------------------------------------------


def test_tile_windows_cover_with_overlap() -> None:
    assert tile_windows(8, tile=8, overlap=2) == [(0, 8)]
    for n, tile, overlap, align in [(20, 8, 2, 1), (17, 6, 2, 1), (24, 8, 2, 2), (9, 4, 1, 1)]:
        windows = tile_windows(n, tile=tile, overlap=overlap, align=align)
        assert windows[0][0] == 0 and windows[-1][1] == n
        assert all(e - s == tile and s % align == 0 for s, e in windows)
        assert all(windows[k + 1][0] < windows[k][1] for k in range(len(windows) - 1))
    weights = blend_weights(tile_windows(20, tile=8, overlap=2), 4, dtype=torch.float64)
    total = torch.zeros(80, dtype=torch.float64)
    for (s, e), w in zip(tile_windows(20, tile=8, overlap=2), weights, strict=True):
        total[s * 4 : e * 4] += w
    torch.testing.assert_close(total, torch.ones(80, dtype=torch.float64))  # equal overlaps sum to 1


def test_tiled_equals_untiled_when_the_tile_covers_the_frame() -> None:
    model = _tiny()
    covering = _tiny(tiling=VideoTilingConfig(tile_latents=4, overlap_latents=1))
    pixels = _pixels(frames=5, size=16)
    with torch.no_grad():
        assert torch.equal(covering.encode(pixels), model.encode(pixels))
        latents = model.encode(pixels)
        assert torch.equal(covering.decode(latents), model.decode(latents))


def test_tiled_decode_matches_untiled_pixel_shuffle_exactly() -> None:
    # A codec without spatial context: tiles agree in every overlap, so the blend is exact.
    plain = PixelShuffleVideoCodec()
    tiled = PixelShuffleVideoCodec(tiling=VideoTilingConfig(tile_latents=4, overlap_latents=2, batch_slice=1))
    pixels = _pixels(frames=9, size=40)
    latents = plain.encode(pixels)
    torch.testing.assert_close(tiled.encode(pixels), latents, rtol=0, atol=1e-6)
    torch.testing.assert_close(tiled.decode(latents), pixels, rtol=0, atol=1e-6)


def test_tiled_decode_of_a_conv_decoder_is_close_to_untiled() -> None:
    # PyTorch's default initialisation (not the saturating one of _tiny): a decoder with a few cells of
    # spatial context, like a trained one.
    torch.manual_seed(0)
    model = TinyVideoAutoencoder(TinyVideoAutoencoderConfig(hidden_channels=16, num_res_blocks=1)).eval()
    tiled = TinyVideoAutoencoder(model.config, tiling=VideoTilingConfig(tile_latents=6, overlap_latents=2))
    tiled.load_state_dict(model.state_dict())
    pixels = _pixels(batch=1, frames=5, size=48)  # 12x12 latent cells, 3x3 tiles
    with torch.no_grad():
        latents = model.encode(pixels)
        reference = model.decode(latents)
        result = tiled.decode(latents)
        encoded = tiled.encode(pixels)
    # Each tile loses context only near its border (3x3 convs); blending hides most of it.
    assert (result - reference).abs().mean() < 0.02
    assert (result - reference).abs().max() < 0.5
    assert (encoded - latents).abs().mean() < 0.1 * latents.abs().mean()
    assert not torch.equal(result, reference)  # tiling really happened


def test_temporal_chunks_keep_frames_and_match_a_groupwise_decoder() -> None:
    model = _tiny()
    chunked = _tiny(tiling=VideoTilingConfig(temporal_chunk_latents=2, temporal_context_latents=1))
    latents = torch.randn(2, 8, 6, 4, 4)
    with torch.no_grad():
        reference = model.decode(latents)
        result = chunked.decode(latents)
    assert result.shape == (2, 3, 21, 16, 16) == reference.shape
    torch.testing.assert_close(result, reference)  # the tiny decoder has no temporal context


def test_temporal_chunks_with_a_context_dependent_decoder() -> None:
    # A decoder whose frames depend on the previous latent: exact once the context covers it.
    class Smoothing(PixelShuffleVideoCodec):
        def _decode_block(self, latents: torch.Tensor) -> torch.Tensor:
            mixed = latents.clone()
            mixed[:, :, 1:] = 0.5 * (latents[:, :, 1:] + latents[:, :, :-1])
            return super()._decode_block(mixed)

    latents = torch.rand(1, 192, 7, 2, 2) - 0.5
    reference = Smoothing().decode(latents)
    exact = Smoothing(tiling=VideoTilingConfig(temporal_chunk_latents=3, temporal_context_latents=1)).decode(
        latents
    )
    assert exact.shape == reference.shape == (1, 3, 25, 8, 8)
    torch.testing.assert_close(exact, reference)


# -- validation and registry ------------------------------------------------------------------------


def test_encode_validation_errors() -> None:
    codec = PixelShuffleVideoCodec()
    with pytest.raises(
        SkyReelsError, match=r"pixels.shape\[2\] \(F\).*1, 5, 9, 13.*got 8.*crop to 5 or pad to 9"
    ):
        codec.encode(torch.zeros(1, 3, 8, 8, 8))
    with pytest.raises(ValueError, match=r"pixels: expected \[B, 3, F, H, W\]"):
        codec.encode(torch.zeros(1, 4, 5, 8, 8))
    with pytest.raises(ValueError, match="multiples of the spatial factor 4, got 8x10"):
        codec.encode(torch.zeros(1, 3, 5, 8, 10))
    bad = torch.zeros(1, 3, 5, 8, 8)
    bad[0, 0, 3, 1, 1] = float("nan")
    with pytest.raises(NonFiniteError, match="pixels"):
        codec.encode(bad)
    with pytest.raises(ValueError, match=r"values in \[-1, 1\].*got range \[0, 255\]"):
        codec.encode(torch.full((1, 3, 5, 8, 8), 255.0).index_fill_(2, torch.tensor([0]), 0.0))
    with pytest.raises(TypeError, match="pixels: expected a floating"):
        codec.encode(torch.zeros(1, 3, 5, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"latents: expected \[B, 192, T, h, w\]"):
        codec.decode(torch.zeros(1, 16, 2, 2, 2))
    with pytest.raises(NonFiniteError, match="latents"):
        codec.decode(torch.full((1, 192, 2, 2, 2), float("inf")))
    assert codec.num_latent_frames(81) == 21 and codec.num_pixel_frames(21) == 81
    with pytest.raises(SkyReelsError, match="num_frames"):
        codec.num_latent_frames(80)
    with pytest.raises(ValueError, match="tile_latents // 2"):
        VideoTilingConfig(tile_latents=4, overlap_latents=3)


def test_registry_refuses_unknown_and_broken_folders(tmp_path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text(json.dumps({"class": "os.system", "format_version": 1}))
    with pytest.raises(FileFormatError, match="expected class one of"):
        load_video_codec(tmp_path / "x")
    with pytest.raises(FileFormatError, match="missing"):
        load_video_codec(tmp_path / "nothing")
    folder = PixelShuffleVideoCodec(spatial_factor=2).save_pretrained(tmp_path / "ps")
    loaded = load_video_codec(folder)
    assert isinstance(loaded, PixelShuffleVideoCodec) and loaded.latent_channels == 48
    with pytest.raises(FileFormatError, match="expected class 'TinyVideoAutoencoder'"):
        TinyVideoAutoencoder.from_pretrained(folder)
    _tiny().save_pretrained(tmp_path / "t")
    (tmp_path / "t" / "model.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(FileFormatError, match=r"model\.safetensors"):
        load_video_codec(tmp_path / "t")
