"""The optimizer step of the quickstart's joint model: PyTorch's default AdamW on CPU (a loop over the
parameters) against its ``foreach`` and fused implementations; ``skyreels_v4.runs.adamw`` picks the
fused one for plain CPU / CUDA parameters.

Run: python -m pytest benchmarks/test_optimizer_step.py --benchmark-only -q
     (or python -m benchmarks.report benchmarks/test_optimizer_step.py for the table)

The parameters are those of ``quickstart.training_module`` at the evidence preset's latent widths
(width 128: about 320 tensors, 5M values), with fixed random gradients; one round = one ``step()``.
Baseline: the loop, in the same session. Before timing, each implementation's parameters after three
steps are checked against the loop's (the implementations are the same update, reassociated).
torch runs single-threaded, as the other training benchmarks.
"""

from __future__ import annotations

import pytest
import torch

from skyreels_v4.runs import adamw
from skyreels_v4.training.quickstart import identity_for, training_module

VARIANTS = {"loop (PyTorch's CPU default)": {"foreach": False}, "foreach": {"foreach": True}, "fused": {}}
OPTIONS = {"lr": 1e-3, "weight_decay": 0.01, "betas": (0.9, 0.99)}


pytestmark = pytest.mark.usefixtures("single_thread")  # benchmarks/conftest.py


def _parameters() -> list[torch.nn.Parameter]:
    identity = identity_for(["--preset", "evidence", "--exchange-window", "1"])
    torch.manual_seed(0)
    module = training_module(identity, video_latent_channels=192, audio_latent_channels=257, text_dim=32)
    params = [torch.nn.Parameter(p.detach().clone()) for p in module.transformer.parameters()]
    g = torch.Generator().manual_seed(1)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    return params


def _optimizer(params: list[torch.nn.Parameter], variant: str) -> torch.optim.AdamW:
    optimizer = adamw(params, **OPTIONS, **VARIANTS[variant])
    assert bool(optimizer.param_groups[0]["fused"]) == (variant == "fused")
    return optimizer


def _after_three_steps(variant: str) -> list[torch.Tensor]:
    params = _parameters()
    optimizer = _optimizer(params, variant)
    for _ in range(3):
        optimizer.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_optimizer_step(benchmark, variant):
    reference = _after_three_steps("loop (PyTorch's CPU default)")
    for got, want in zip(_after_three_steps(variant), reference):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    params = _parameters()
    optimizer = _optimizer(params, variant)
    count = sum(p.numel() for p in params)
    benchmark.group = f"AdamW step, quickstart joint model ({len(params)} tensors, {count / 1e6:.1f}M values)"
    benchmark.extra_info.update(
        impl=variant,
        baseline=variant.startswith("loop"),
        shape=f"{len(params)} tensors",
        dtype="float32",
        device="cpu",
    )
    benchmark.pedantic(optimizer.step, rounds=30, iterations=1, warmup_rounds=3)
