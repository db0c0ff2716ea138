"""Shared fixtures: seeded attention inputs on odd grids, and a tiny randomised base video branch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import skyreels_refiner_vsa.sparse_attention as vsa_function
from skyreels_mmdit_blocks import MMDiTBranch, joint_preset


@pytest.fixture(scope="session")
def make_inputs():
    """``make_inputs(grid, text=0, batch=2, heads=2, head_dim=16, dtype=float64, seed=0, padded=True)``.

    Returns a dict of video_q/k/v ``[B, N, H, D]``, gate, and (text > 0) text_q/k/v and, with
    ``padded``, text_valid_lengths that pad the last sample's text.
    """

    def fn(grid, *, text=0, batch=2, heads=2, head_dim=16, dtype=torch.float64, seed=0, padded=True):
        gen = torch.Generator().manual_seed(seed)
        n = math.prod(grid)

        def rand(length):
            return torch.randn(batch, length, heads, head_dim, generator=gen).to(dtype)

        out = {"video_q": rand(n), "video_k": rand(n), "video_v": rand(n), "gate": rand(n)}
        if text:
            out.update(text_q=rand(text), text_k=rand(text), text_v=rand(text))
            if padded:
                valid = torch.full((batch,), text)
                valid[-1] = max(1, text // 2)
                out["text_valid_lengths"] = valid
        return out

    return fn


def randomize_(module: nn.Module, seed: int = 0, std: float = 0.1) -> nn.Module:
    """Every parameter ~ N(0, std²), norm gains ~ 1 + N(0, std²), so zero-initialised layers act too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            noise = torch.randn(param.shape, generator=gen) * std
            is_gain = param.ndim == 1 and name.endswith("weight") and "norm" in name
            param.copy_(noise + 1.0 if is_gain else noise)
    return module


@pytest.fixture(scope="session")
def tiny_video_config():
    """The ``tiny`` preset's video branch: D 64, 4 heads, 2 dual + 2 single blocks, C = 4, text 32-d."""
    return joint_preset("tiny").video


@pytest.fixture
def tiny_base(tiny_video_config) -> MMDiTBranch:
    """A randomised tiny base video branch reading Concat(V, I, M) = 9 channels."""
    torch.manual_seed(0)
    return randomize_(MMDiTBranch(tiny_video_config), seed=1).eval()


@pytest.fixture(scope="session")
def randomize():
    return randomize_


@pytest.fixture
def block_selections(monkeypatch):
    """Record every VSA block selection as ``(attended, video_blocks)``: ``attended`` ``[B, H, nQ]``
    counts the video key blocks each query block attends (forced shared tail included), out of
    ``video_blocks``. A test claiming sparsity asserts ``attended < video_blocks`` with this."""
    records: list[tuple[torch.Tensor, int]] = []
    select = vsa_function.select_key_blocks

    def spy(logits, keep, *, num_video_tokens, num_key_tokens, block_size):
        index, counts = select(
            logits,
            keep,
            num_video_tokens=num_video_tokens,
            num_key_tokens=num_key_tokens,
            block_size=block_size,
        )
        video_blocks = math.ceil(num_video_tokens / block_size)
        assert bool((counts == index.shape[-1]).all())  # every row lists distinct blocks, all used
        records.append(((index.long() < video_blocks).sum(-1), video_blocks))
        return index, counts

    monkeypatch.setattr(vsa_function, "select_key_blocks", spy)
    return records
