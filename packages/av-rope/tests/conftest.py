"""Shared fixtures for skyreels-av-rope tests."""

from __future__ import annotations

import pytest
import torch

from skyreels_av_rope import HUNYUAN_VIDEO_ROPE, RotaryEmbedding


@pytest.fixture
def video_rope() -> RotaryEmbedding:
    """HunyuanVideo's (16, 56, 56) split of head dim 128, theta 256."""
    return RotaryEmbedding(HUNYUAN_VIDEO_ROPE)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)
