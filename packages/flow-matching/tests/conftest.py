"""Shared fixtures: deterministic velocity fields and a tiny joint model that records its calls."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from torch import Tensor


def smooth_velocity(x: Tensor, sigma: Tensor) -> Tensor:
    """A nonlinear, σ-dependent, deterministic stand-in for a network: u(x, σ) for x [B, ...], σ [B]."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return torch.sin(2.0 * x) * (1.0 + s) + 0.3 * x * torch.cos(3.0 * s) - 0.5 * s


@pytest.fixture
def velocity_fn():
    return smooth_velocity


@dataclass
class RecordingJointModel:
    """Elementwise joint model (so batched and sequential forwards agree bit for bit).

    condition: {"text": [B, 1], "gain": float}. Records the batch size of every call.
    """

    batch_sizes: list[int] = field(default_factory=list)

    def __call__(self, video_latents, audio_latents, *, video_sigma, audio_sigma, condition):
        self.batch_sizes.append(video_latents.shape[0])
        text = condition["text"]
        gain = condition["gain"]
        b = video_latents.shape[0]
        video_u = (
            torch.tanh(video_latents) * (1.0 + video_sigma.view(b, 1, 1, 1, 1))
            + gain * text.view(b, 1, 1, 1, 1) * video_latents
            - text.view(b, 1, 1, 1, 1)
        )
        audio_u = audio_latents * audio_sigma.view(b, 1, 1) + torch.cos(text.view(b, 1, 1) * audio_latents)
        return video_u, audio_u


@pytest.fixture
def joint_model():
    return RecordingJointModel()


@pytest.fixture
def joint_inputs():
    g = torch.Generator().manual_seed(7)
    video = torch.randn(2, 3, 2, 4, 4, generator=g)
    audio = torch.randn(2, 4, 10, generator=g)
    condition = {"text": torch.tensor([[1.0], [2.0]]), "gain": 0.5}
    video_negative = {"text": torch.tensor([[-0.5], [0.25]]), "gain": 0.5}
    audio_negative = {"text": torch.tensor([[0.1], [-1.5]]), "gain": 0.5}
    return video, audio, condition, video_negative, audio_negative
