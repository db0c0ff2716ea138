"""Shared fixtures for skyreels-audio-vae tests: small configs that keep the suite fast on 2 CPU cores."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from skyreels_audio_vae import AudioVAE, AudioVAEConfig


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP spinning makes 2 threads far slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def micro_config() -> Callable[..., AudioVAEConfig]:
    """Factory for a very small hop-1024 config (widths 4..8); keyword overrides allowed."""

    def make(**overrides: object) -> AudioVAEConfig:
        fields: dict[str, object] = {
            "audio_channels": 1,
            "encoder_channels": 4,
            "decoder_channels": 4,
            "channel_multipliers": (1, 2, 2, 2),
            "strides": (2, 4, 8, 16),
            "latent_channels": 4,
        }
        fields.update(overrides)
        return AudioVAEConfig(**fields)  # type: ignore[arg-type]

    return make


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (Snake log-alpha/beta, weight-norm g/v, biases) a random, non-default value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if name.endswith(("alpha", "beta")) else 1.0
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
            if name.endswith("original0"):  # weight-norm magnitude: keep activations O(1)
                p.abs_().mul_(0.5)
    return model


@pytest.fixture
def randomize() -> Callable[..., torch.nn.Module]:
    """The :func:`randomize_` helper, as a fixture (test files cannot import each other)."""
    return randomize_


@pytest.fixture
def random_micro_vae(micro_config: Callable[..., AudioVAEConfig]) -> AudioVAE:
    return randomize_(AudioVAE(micro_config()).eval())  # type: ignore[return-value]
