"""Shared fixtures: a tiny random diffusers HunyuanVideo transformer, our branch loaded from it, inputs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from diffusers import HunyuanVideoTransformer3DModel
from torch import nn

from skyreels_mmdit_blocks import MMDiTBranch, infer_hunyuan_branch_config, load_hunyuan_video_weights

TINY_HUNYUAN = {
    "in_channels": 4,
    "out_channels": 4,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "num_layers": 2,
    "num_single_layers": 2,
    "num_refiner_layers": 2,
    "mlp_ratio": 4.0,
    "patch_size": 2,
    "patch_size_t": 1,
    "guidance_embeds": True,
    "text_embed_dim": 24,
    "pooled_projection_dim": 12,
    "rope_axes_dim": (4, 6, 6),
}


def _randomize(module: nn.Module, seed: int, std: float) -> nn.Module:
    """Every parameter ~ N(0, std²) (gains around 1), so zero-initialised layers do something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            noise = torch.randn(param.shape, generator=generator) * std
            is_gain = name.endswith("norm.weight") or "norm_" in name or "_norm." in name or ".norm" in name
            param.copy_(noise + 1.0 if is_gain and param.ndim == 1 and name.endswith("weight") else noise)
    return module


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: one intra-op thread is several times faster than two on a shared
    2-core machine (thread hand-off dominates). Restored after each test."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def randomize():
    """``randomize(module, seed=0, std=0.1)``: fill every parameter with seeded noise (gains near 1)."""

    def fn(module: nn.Module, seed: int = 0, std: float = 0.1) -> nn.Module:
        return _randomize(module, seed, std)

    return fn


@pytest.fixture(scope="session")
def hunyuan_model() -> HunyuanVideoTransformer3DModel:
    """Tiny random diffusers HunyuanVideo transformer (D 32, 2 heads, 2 dual + 2 single, guidance on)."""
    torch.manual_seed(0)
    model = HunyuanVideoTransformer3DModel(**TINY_HUNYUAN).eval()
    return _randomize(model, seed=1, std=0.1)


@pytest.fixture(scope="session")
def hunyuan_state_dict(hunyuan_model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in hunyuan_model.state_dict().items()}


@pytest.fixture
def our_branch(hunyuan_model, hunyuan_state_dict) -> MMDiTBranch:
    """Our video branch, sized from and loaded with the tiny diffusers model's weights."""
    config = infer_hunyuan_branch_config(hunyuan_state_dict, config_json=dict(hunyuan_model.config))
    branch = MMDiTBranch(config).eval()
    load_hunyuan_video_weights(branch, hunyuan_state_dict)
    return branch


@dataclass
class HunyuanInputs:
    latents: torch.Tensor  # [B, 4, T, H, W]
    timestep: torch.Tensor  # [B]
    text: torch.Tensor  # [B, Lt, 24]
    text_mask: torch.Tensor  # [B, Lt] int
    pooled: torch.Tensor  # [B, 12]
    guidance: torch.Tensor  # [B]

    def diffusers(self, model: HunyuanVideoTransformer3DModel) -> torch.Tensor:
        out = model(
            self.latents,
            self.timestep,
            self.text,
            self.text_mask,
            self.pooled,
            self.guidance,
            return_dict=False,
        )
        return out[0]

    def ours(self, branch: nn.Module, **extra) -> torch.Tensor:
        return branch(
            self.latents,
            timestep=self.timestep,
            text_tokens=self.text,
            text_mask=self.text_mask,
            pooled_text=self.pooled,
            guidance=self.guidance,
            **extra,
        )


@pytest.fixture(scope="session")
def make_inputs():
    """``make_inputs(shape=(3, 6, 10), lengths=(7, 4), seed=0)`` -> HunyuanInputs, batch = len(lengths)."""

    def fn(shape=(3, 6, 10), lengths=(7, 4), seed=0, text_len=7) -> HunyuanInputs:
        g = torch.Generator().manual_seed(seed)
        batch = len(lengths)
        mask = (torch.arange(text_len)[None, :] < torch.tensor(lengths)[:, None]).to(torch.int64)
        return HunyuanInputs(
            latents=torch.randn(batch, 4, *shape, generator=g),
            timestep=torch.tensor([937.5, 20.0, 500.0, 1.0][:batch]),
            text=torch.randn(batch, text_len, 24, generator=g),
            text_mask=mask,
            pooled=torch.randn(batch, 12, generator=g),
            guidance=torch.tensor([6000.0, 3500.0, 1000.0, 0.0][:batch]),
        )

    return fn
