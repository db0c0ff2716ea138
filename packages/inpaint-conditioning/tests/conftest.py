"""Shared fixtures: the pooling fake VAE, a tiny random diffusers Wan VAE behind the VideoVae protocol."""

from __future__ import annotations

import pytest
import torch

from skyreels_inpaint_conditioning import PoolingVideoVae


class DiffusersWanVae:
    """VideoVae adapter over diffusers' AutoencoderKLWan (posterior mean, no normalisation: tests only)."""

    temporal_factor = 4
    spatial_factor = 8

    def __init__(self, model) -> None:
        self.model = model
        self.latent_channels = int(model.config.z_dim)
        self.num_encode_calls = 0

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        self.num_encode_calls += 1
        with torch.no_grad():
            return self.model.encode(pixels).latent_dist.mode()


@pytest.fixture
def pooling_vae() -> PoolingVideoVae:
    return PoolingVideoVae(latent_channels=4, seed=0)


@pytest.fixture(scope="module")
def tiny_wan_vae() -> DiffusersWanVae:
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = diffusers.AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        attn_scales=[],
    ).eval()
    return DiffusersWanVae(model)


@pytest.fixture
def random_video() -> torch.Tensor:
    """``[2, 3, 17, 32, 48]`` uniform in [-1, 1] (T = 5, latent 4 x 6)."""
    gen = torch.Generator().manual_seed(1234)
    return torch.rand(2, 3, 17, 32, 48, generator=gen) * 2 - 1
