"""Joint-model training throughput (paper 4): steps/s and peak memory of one optimizer step of
``JointTrainingModule`` for the tiny and small presets, eager vs activation checkpointing vs regional
``torch.compile`` of the blocks (what ``skyreels_v4.scale.parallelize`` applies) vs both, and the
eager step with the lower packages' finiteness checks switched off (their cost on CPU).

Run: python -m pytest benchmarks/test_training_throughput.py --benchmark-only -q
     (or python -m benchmarks.report benchmarks/test_training_throughput.py for the table)

One step = the module's ``prepare_batch`` (task t2av, σ and ε draws) + ``compute_loss`` + backward +
AdamW step, on a batch shaped like the latent cache's. Baseline per group: the eager step of the same
preset in the same session. The small preset keeps its full width and depth (D 768, 4 dual + 12 single
blocks per branch) with a reduced token count so that it runs on a CPU. ``peak_mb`` (extra_info) is
the highest memory allocated above the start during forward + backward, measured with the torch
profiler (``skyreels_v4.scale.measure``): activations and gradients, not the weights or AdamW state.
torch runs single-threaded: on a shared 2-core machine two OpenMP threads make timings erratic.
"""

from __future__ import annotations

import pytest
import torch

from skyreels_attention import FiniteChecks, finite_checks
from skyreels_v4.scale.measure import measure_training_memory
from skyreels_v4.training import JointTask, JointTrainingModule

# preset -> (batch, video latent grid (T, h, w), audio latents, text tokens, video / audio latent channels)
SIZES = {
    "tiny": (4, (3, 8, 8), 24, 16, 16, 64),
    "small": (1, (2, 4, 4), 12, 8, 16, 64),
}
VARIANTS = {  # name -> (activation checkpointing, compile the blocks, finite checks)
    "eager": (False, False, FiniteChecks.CPU),
    "eager, finite checks off": (False, False, FiniteChecks.OFF),
    "checkpointing": (True, False, FiniteChecks.CPU),
    "compile": (False, True, FiniteChecks.CPU),
    "compile+checkpointing": (True, True, FiniteChecks.CPU),
}
ROUNDS = {"tiny": 5, "small": 3}
FIRST_LOSS: dict[str, float] = {}  # preset -> the eager run's step-1 loss


pytestmark = pytest.mark.usefixtures("single_thread")  # benchmarks/conftest.py


def _shape(preset: str) -> str:
    batch, (t, h, w), audio, text, cv, ca = SIZES[preset]
    return f"B {batch}, video [{cv}, {t}, {h}, {w}], audio [{ca}, {audio}], text {text}"


def _setup(preset: str, checkpointing: bool, compiled: bool):
    batch, (t, h, w), audio_len, text_len, cv, ca = SIZES[preset]
    torch.manual_seed(0)
    text_dim = 32
    module = JointTrainingModule(
        preset=preset,
        video_latent_channels=cv,
        audio_latent_channels=ca,
        text_dim=text_dim,
        prediction="x0",
        tasks={"t2av": 1.0},
        text_dropout=0.0,
        activation_checkpointing=checkpointing,
        seed=0,
    )
    model = module.transformer
    if compiled:  # regional compile, as scale.parallelize(compile=CompileMode.BLOCKS)
        for unit in (*model.video.blocks, *model.audio.blocks, *model.exchanges):
            unit.compile()
    module.frame_geometry = (4, 4)
    g = torch.Generator().manual_seed(1)
    data = {
        "video_latents": torch.randn(batch, cv, t, h, w, generator=g),
        "audio_latents": torch.randn(batch, ca, audio_len, generator=g),
        "text_tokens": torch.randn(batch, text_len, text_dim, generator=g),
        "text_mask": torch.ones(batch, text_len, dtype=torch.bool),
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    counter = [0]

    def prepared():
        counter[0] += 1
        return module.prepare_batch(data, generator=module._generator(counter[0]), task=JointTask.T2AV)

    def step() -> float:
        loss = module.compute_loss(prepared())["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def memory() -> int:
        inputs = prepared()
        measured = measure_training_memory(
            lambda: (module.compute_loss(inputs)["loss"],), lambda outputs: outputs[0]
        )
        optimizer.zero_grad(set_to_none=True)
        return measured.peak

    return module, step, memory


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("preset", list(SIZES))
def test_training_step(benchmark, preset, variant):
    checkpointing, compiled, checks = VARIANTS[variant]
    with finite_checks(checks):  # the attention / joint-model input checks (CPU by default)
        _run(benchmark, preset, variant, checkpointing, compiled)


def _run(benchmark, preset: str, variant: str, checkpointing: bool, compiled: bool) -> None:
    module, step, memory = _setup(preset, checkpointing, compiled)
    first = step()  # compiles when compiled
    # Same weights, same draws: every variant computes the eager loss at step 1 (fp32 reassociation).
    reference = FIRST_LOSS.setdefault(preset, first)
    assert abs(first - reference) <= 1e-4 * max(1.0, abs(reference)), (variant, first, reference)
    peak = memory()
    params = sum(p.numel() for p in module.transformer.parameters())
    benchmark.group = f"training step, {preset} preset ({params / 1e6:.1f}M params), {_shape(preset)}"
    benchmark.extra_info.update(
        impl=f"{preset} {variant}",
        baseline=variant == "eager",
        shape=_shape(preset),
        dtype="float32",
        device="cpu",
        peak_mb=round(peak / 2**20, 2),
        params=params,
    )
    benchmark.pedantic(step, rounds=ROUNDS[preset], iterations=1, warmup_rounds=1)
