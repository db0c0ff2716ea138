"""Solver and guidance cost per step, as ratios to one forward of a small transformer (CPU, fp32).

Run: python -m pytest benchmarks/test_flow_matching.py --benchmark-only -q
Each group has one baseline (model forwards); "arithmetic only" rows call the solver/guidance with a
model that returns a cached velocity, so they measure the overhead the package adds per step.
torch runs single-threaded here: on a shared 2-core machine two OpenMP threads make small
elementwise ops 10x slower and noisy, which would swamp the overhead being measured.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from skyreels_flow_matching import (
    GuidanceBatching,
    JointGuidanceConfig,
    JointGuidedDenoiser,
    ModalityGuidanceConfig,
    classifier_free_guidance,
    rescale_guidance,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
    sample_unipc,
)

WIDTH, VIDEO_TOKENS, AUDIO_TOKENS, LAYERS = 256, 1024, 256, 2
SHAPE = f"video [1, {VIDEO_TOKENS}, {WIDTH}]"
JOINT_SHAPE = f"video [1, {VIDEO_TOKENS}, {WIDTH}] + audio [1, {AUDIO_TOKENS}, {WIDTH}]"
ROUNDS = 5


pytestmark = pytest.mark.usefixtures("single_thread")  # benchmarks/conftest.py


class TinyVelocityModel(nn.Module):
    """A few transformer layers with an additive σ embedding: the stand-in for a denoiser forward."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.sigma_embedding = nn.Linear(1, WIDTH)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(WIDTH, nhead=4, dim_feedforward=4 * WIDTH, batch_first=True)
            for _ in range(LAYERS)
        )
        self.eval()

    def forward(
        self, tokens: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = tokens + self.sigma_embedding(sigma.view(-1, 1, 1))
        if text is not None:
            h = h + text
        for layer in self.layers:
            h = layer(h)
        return h


class TinyJointModel:
    """JointVelocityModel over [video tokens; audio tokens] with condition {"text": [B, 1, D]}."""

    def __init__(self) -> None:
        self.net = TinyVelocityModel()

    def __call__(self, video_latents, audio_latents, *, video_sigma, audio_sigma, condition):
        out = self.net(torch.cat([video_latents, audio_latents], dim=1), video_sigma, condition["text"])
        return out[:, :VIDEO_TOKENS], out[:, VIDEO_TOKENS:]


def _info(benchmark, impl: str, baseline: bool, shape: str = SHAPE) -> None:
    benchmark.extra_info.update(impl=impl, baseline=baseline, shape=shape, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def model():
    return TinyVelocityModel()


@pytest.fixture(scope="module")
def tokens():
    return torch.randn(1, VIDEO_TOKENS, WIDTH, generator=torch.Generator().manual_seed(1))


def _model_fn(model):
    def fn(x, sigma):
        return model(x, sigma)

    return fn


def _cached_fn(velocity):
    def fn(x, sigma):
        return velocity

    return fn


ONE_STEP = torch.tensor([0.6, 0.5])
TWO_STEPS = torch.tensor([0.7, 0.6, 0.5])  # not from σ = 1, so the second DPM step is multistep


@pytest.mark.parametrize(
    ("impl", "baseline"),
    [
        ("model forward", True),
        ("euler step", False),
        ("heun step (2 forwards)", False),
        ("euler step, arithmetic only", False),
        ("heun step, arithmetic only", False),
    ],
)
def test_one_solver_step(benchmark, model, tokens, impl, baseline):
    benchmark.group = f"one solver step vs one forward, {LAYERS}x TransformerEncoderLayer({WIDTH}) on {SHAPE}"
    _info(benchmark, impl, baseline)
    sigma = torch.full((1,), 0.6)
    velocity = model(tokens, sigma).detach()
    calls = {
        "model forward": lambda: model(tokens, sigma),
        "euler step": lambda: sample_euler(_model_fn(model), tokens, ONE_STEP),
        "heun step (2 forwards)": lambda: sample_heun(_model_fn(model), tokens, ONE_STEP),
        "euler step, arithmetic only": lambda: sample_euler(_cached_fn(velocity), tokens, ONE_STEP),
        "heun step, arithmetic only": lambda: sample_heun(_cached_fn(velocity), tokens, ONE_STEP),
    }
    with torch.inference_mode():
        benchmark.pedantic(calls[impl], rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize(
    ("impl", "baseline"),
    [
        ("two model forwards", True),
        ("euler, 2 steps", False),
        ("dpmpp_2m, 2 steps (2nd multistep)", False),
        ("dpmpp_2m, 2 steps, arithmetic only", False),
        ("unipc, 2 steps (predictor + corrector)", False),
        ("unipc, 2 steps, arithmetic only", False),
    ],
)
def test_two_solver_steps(benchmark, model, tokens, impl, baseline):
    benchmark.group = (
        f"two solver steps vs two forwards, {LAYERS}x TransformerEncoderLayer({WIDTH}) on {SHAPE}"
    )
    _info(benchmark, impl, baseline)
    sigma = torch.full((1,), 0.6)
    velocity = model(tokens, sigma).detach()
    calls = {
        "two model forwards": lambda: (model(tokens, sigma), model(tokens, sigma)),
        "euler, 2 steps": lambda: sample_euler(_model_fn(model), tokens, TWO_STEPS),
        "dpmpp_2m, 2 steps (2nd multistep)": lambda: sample_dpmpp_2m(_model_fn(model), tokens, TWO_STEPS),
        "dpmpp_2m, 2 steps, arithmetic only": lambda: sample_dpmpp_2m(
            _cached_fn(velocity), tokens, TWO_STEPS
        ),
        "unipc, 2 steps (predictor + corrector)": lambda: sample_unipc(_model_fn(model), tokens, TWO_STEPS),
        "unipc, 2 steps, arithmetic only": lambda: sample_unipc(_cached_fn(velocity), tokens, TWO_STEPS),
    }
    with torch.inference_mode():
        benchmark.pedantic(calls[impl], rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize(
    ("impl", "baseline"),
    [
        ("joint forward, conditional only", True),
        ("CFG batched (cond + shared negative)", False),
        ("CFG sequential (cond + shared negative)", False),
        ("CFG batched (cond + video and audio negatives)", False),
        ("CFG combine + rescale, arithmetic only", False),
    ],
)
def test_guidance(benchmark, impl, baseline):
    model_name = f"{LAYERS}x TransformerEncoderLayer({WIDTH})"
    benchmark.group = f"guided denoiser call vs one joint forward, {model_name} on {JOINT_SHAPE}"
    _info(benchmark, impl, baseline, JOINT_SHAPE)
    g = torch.Generator().manual_seed(2)
    model = TinyJointModel()
    video = torch.randn(1, VIDEO_TOKENS, WIDTH, generator=g)
    audio = torch.randn(1, AUDIO_TOKENS, WIDTH, generator=g)
    condition = {"text": torch.randn(1, 1, WIDTH, generator=g)}
    video_negative = {"text": torch.zeros(1, 1, WIDTH)}
    audio_negative = {"text": torch.ones(1, 1, WIDTH)}
    sigma = torch.full((1,), 0.6)

    def denoiser(batching, audio_negative_condition):
        config = JointGuidanceConfig(
            video=ModalityGuidanceConfig(scale=5.0, rescale=0.7),
            audio=ModalityGuidanceConfig(scale=3.0),
            batching=batching,
        )
        return JointGuidedDenoiser(
            model,
            condition=condition,
            video_negative_condition=video_negative,
            audio_negative_condition=audio_negative_condition,
            config=config,
        )

    batched = denoiser(GuidanceBatching.BATCHED, video_negative)
    sequential = denoiser(GuidanceBatching.SEQUENTIAL, video_negative)
    three_branches = denoiser(GuidanceBatching.BATCHED, audio_negative)
    with torch.inference_mode():
        cond = model(video, audio, video_sigma=sigma, audio_sigma=sigma, condition=condition)
        neg = model(video, audio, video_sigma=sigma, audio_sigma=sigma, condition=video_negative)

    def combine_only():
        guided = rescale_guidance(classifier_free_guidance(cond[0], neg[0], 5.0), cond[0], 0.7)
        return guided, classifier_free_guidance(cond[1], neg[1], 3.0)

    calls = {
        "joint forward, conditional only": lambda: model(
            video, audio, video_sigma=sigma, audio_sigma=sigma, condition=condition
        ),
        "CFG batched (cond + shared negative)": lambda: batched((video, audio), sigma),
        "CFG sequential (cond + shared negative)": lambda: sequential((video, audio), sigma),
        "CFG batched (cond + video and audio negatives)": lambda: three_branches((video, audio), sigma),
        "CFG combine + rescale, arithmetic only": combine_only,
    }
    with torch.inference_mode():
        benchmark.pedantic(calls[impl], rounds=ROUNDS, iterations=1, warmup_rounds=1)
