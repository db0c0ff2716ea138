"""Text-to-video parity with diffusers' HunyuanVideoPipeline (issue 12, "Show": parity).

A tiny random diffusers ``HunyuanVideoTransformer3DModel`` is saved as a checkpoint folder, imported
into the video branch of a ``SkyReelsV4Transformer`` (``transformer_from_hunyuan``: ``2C + 1`` input
channels with zero ``I``/``M`` columns, zero text cross-attention and audio-video exchanges, a fresh
audio branch), and both pipelines run the same text-to-video solve: same prompt embeddings (+ pooled
+ padding mask), initial noise, FlowMatchEulerDiscreteScheduler σ grid with shift, embedded guidance
and steps. Our side goes through ``SkyReelsV4Pipeline.prepare`` and ``.sample`` with guidance scales 1.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from diffusers import (
    AutoencoderKLHunyuanVideo,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideoPipeline,
    HunyuanVideoTransformer3DModel,
)
from torch import nn

from skyreels_flow_matching import ScheduleForm, Solver
from skyreels_v4.model.convert import transformer_from_hunyuan
from skyreels_v4.pipeline import GenerationRequest, SamplingConfig, SkyReelsV4Pipeline
from skyreels_v4.text import TextEmbeddings
from skyreels_v4.vae import DiffusersVideoVae, FrameAudioCodec

TINY_HUNYUAN = {
    "in_channels": 4,
    "out_channels": 4,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "num_layers": 2,
    "num_single_layers": 2,
    "num_refiner_layers": 1,
    "mlp_ratio": 4.0,
    "patch_size": 2,
    "patch_size_t": 1,
    "guidance_embeds": True,
    "text_embed_dim": 16,
    "pooled_projection_dim": 8,
    "rope_axes_dim": (4, 6, 6),
}
STEPS, SHIFT, GUIDANCE = 4, 7.0, 6.0
FRAMES, HEIGHT, WIDTH = 9, 48, 64
# Float32 rounding: the latents (|x| ~ 1) agree to this absolute tolerance (measured: 4.8e-7 max).
ATOL = 1e-5


def randomize(module: nn.Module, seed: int, std: float = 0.1) -> nn.Module:
    """Every parameter ~ N(0, std²) (norm gains near 1), so no layer is inert."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            noise = torch.randn(param.shape, generator=generator) * std
            gain = param.ndim == 1 and name.endswith("weight") and "norm" in name
            param.copy_(noise + 1.0 if gain else noise)
    return module


class FixedTextEncoder(nn.Module):
    """Returns the same prompt embeddings for every prompt (the test's stand-in for a text encoder)."""

    def __init__(self, embeddings: TextEmbeddings) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.dim = embeddings.dim
        self.pooled_dim = None if embeddings.pooled is None else embeddings.pooled.shape[1]

    def encode(self, prompts: list[str], *args: object, **kwargs: object) -> TextEmbeddings:
        e = self.embeddings
        n = len(prompts)
        return TextEmbeddings(
            tokens=e.tokens.expand(n, -1, -1).clone(),
            mask=e.mask.expand(n, -1).clone(),
            pooled=None if e.pooled is None else e.pooled.expand(n, -1).clone(),
        )


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def hunyuan(tmp_path_factory):
    torch.manual_seed(0)
    transformer = randomize(HunyuanVideoTransformer3DModel(**TINY_HUNYUAN), seed=1).eval()
    folder = tmp_path_factory.mktemp("hunyuan") / "transformer"
    transformer.save_pretrained(folder)
    vae = AutoencoderKLHunyuanVideo(
        latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4
    ).eval()
    return transformer, folder, vae


def _inputs(lengths: tuple[int, ...] = (5,), length: int = 7, seed: int = 2):
    generator = torch.Generator().manual_seed(seed)
    batch = len(lengths)
    tokens = torch.randn(batch, length, TINY_HUNYUAN["text_embed_dim"], generator=generator)
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    pooled = torch.randn(batch, TINY_HUNYUAN["pooled_projection_dim"], generator=generator)
    noise = torch.randn(batch, 4, 1 + (FRAMES - 1) // 4, HEIGHT // 8, WIDTH // 8, generator=generator)
    return tokens, mask, pooled, noise


def _diffusers_latents(transformer, vae, tokens, mask, pooled, noise, steps=STEPS):
    pipe = HunyuanVideoPipeline(
        text_encoder=None,
        tokenizer=None,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=SHIFT),
        text_encoder_2=None,
        tokenizer_2=None,
    )
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        out = pipe(
            prompt_embeds=tokens,
            pooled_prompt_embeds=pooled,
            prompt_attention_mask=mask.long(),
            height=HEIGHT,
            width=WIDTH,
            num_frames=FRAMES,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            latents=noise.clone(),
            output_type="latent",
        )
    return out.frames


def _our_pipeline(folder, vae, tokens, mask, pooled, steps=STEPS):
    model, report = transformer_from_hunyuan(folder, audio_latent_channels=16)
    sampling = SamplingConfig(
        solver=Solver.EULER,
        num_steps=steps,
        shift=SHIFT,
        # HunyuanVideoPipeline passes sigmas = linspace(1, 0, N + 1)[:-1] to the scheduler, which shifts
        # them once: SHIFT_ONCE (bit-exact at these steps; DIFFUSERS is the scheduler's own default grid).
        schedule=ScheduleForm.SHIFT_ONCE,
        video_guidance=1.0,
        audio_guidance=1.0,
        embedded_guidance=GUIDANCE,
    )
    pipe = SkyReelsV4Pipeline(
        transformer=model,
        video_vae=DiffusersVideoVae(vae),
        audio_vae=FrameAudioCodec(sample_rate=4000, hop_length=16),
        text_encoder=FixedTextEncoder(TextEmbeddings(tokens=tokens, mask=mask, pooled=pooled)),
        sampling=sampling,
    )
    return pipe, report


def test_text_to_video_matches_diffusers_pipeline(hunyuan):
    transformer, folder, vae = hunyuan
    tokens, mask, pooled, noise = _inputs()
    expected = _diffusers_latents(transformer, vae, tokens, mask, pooled, noise)

    pipe, report = _our_pipeline(folder, vae, tokens, mask, pooled)
    assert report.widened == ("patch_embed.proj.weight",)
    request = GenerationRequest(
        prompt="a red ball", task="t2v", num_frames=FRAMES, height=HEIGHT, width=WIDTH, seed=0
    )
    prepared = pipe.prepare(request)
    prepared = replace(prepared, video_noise=noise.clone())
    video, audio = pipe.sample(prepared, progress=False)

    assert video.shape == expected.shape == noise.shape
    difference = (video - expected).abs().max().item()
    print(f"max |ours - diffusers| = {difference:.3g}")
    assert difference < ATOL, difference
    # Not a trivial agreement: the solve moved the latents far from the noise.
    assert (video - noise).abs().max().item() > 0.1
    assert torch.isfinite(audio).all()


def test_parity_is_sensitive_to_the_guidance_and_the_steps(hunyuan):
    """The comparison can fail: a different embedded guidance or step count changes the result."""
    transformer, folder, vae = hunyuan
    tokens, mask, pooled, noise = _inputs()
    expected = _diffusers_latents(transformer, vae, tokens, mask, pooled, noise)
    pipe, _ = _our_pipeline(folder, vae, tokens, mask, pooled)
    request = GenerationRequest(
        prompt="a red ball", task="t2v", num_frames=FRAMES, height=HEIGHT, width=WIDTH, seed=0
    )
    prepared = replace(pipe.prepare(request), video_noise=noise.clone())
    fewer, _ = pipe.sample(prepared, sampling=replace(pipe.sampling, num_steps=STEPS - 1), progress=False)
    assert (fewer - expected).abs().max().item() > 100 * ATOL
    pipe.sampling = replace(pipe.sampling, embedded_guidance=GUIDANCE + 1.0)
    other = replace(pipe.prepare(request), video_noise=noise.clone())
    guided, _ = pipe.sample(other, progress=False)
    assert (guided - expected).abs().max().item() > 100 * ATOL
