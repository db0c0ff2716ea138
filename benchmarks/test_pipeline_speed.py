"""Sampling speed of SkyReelsV4Pipeline (text-to-video) against diffusers' HunyuanVideoPipeline, and
the VSA option of the base model's video self-attention at 16k video tokens. CPU, fp32, one thread.

Run: python -m benchmarks.report benchmarks/test_pipeline_speed.py

Group "t2v 4 steps + CFG": diffusers' HunyuanVideoPipeline (baseline; ``true_cfg_scale`` 5 with
negative embeddings: two transformer calls per step, one after the other, embedded guidance 6) vs our
pipeline's ``sample`` over the same video transformer (imported with ``transformer_from_hunyuan``:
same weights), with video guidance 5 batched into one call per step, eager and with every block
compiled (``torch.compile`` per block; compile time is in the warm-up). t2v holds the audio at σ = 1
(as training does) and, since the converted video branch reads nothing from the audio (eq. 5 output
projections zero), runs the video branch alone (``skyreels_v4.pipeline.denoise``); the group
"t2v, joint path" forces the audio branch and eq. 5 exchanges to run, as a trained joint model does.
Prompt embeddings are computed once on both sides (ours: the pipeline's cache). The sizes are equal:
D 256 (4 heads x 64), 2 dual + 2 single blocks, 1152 video tokens (3 x 16 x 24 after patching).

Group "t2v 1 step at 16k video tokens": our pipeline, dense video self-attention (baseline) vs VSA
(sparsity 0.875, the C++ block-sparse kernel) in every video block; D 128 (2 heads x 64), 1 dual +
1 single block, 16 x 32 x 32 = 16384 video tokens, where attention dominates.
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

from skyreels_flow_matching import ScheduleForm
from skyreels_refiner_vsa import VSAConfig
from skyreels_v4.model import SkyReelsV4Transformer, VideoSelfAttention, VideoSelfAttentionConfig
from skyreels_v4.model.convert import transformer_from_hunyuan
from skyreels_v4.pipeline import GenerationRequest, SamplingConfig, SkyReelsV4Pipeline
from skyreels_v4.text import TextEmbeddings
from skyreels_v4.vae import DiffusersVideoVae, FrameAudioCodec

TEXT_DIM, POOLED_DIM, TEXT_LEN, REAL_TEXT = 32, 16, 24, 18


class _FixedTextEncoder(nn.Module):
    """The same embeddings for every prompt (stands in for a text encoder; both sides get them)."""

    def __init__(self, embeddings: TextEmbeddings) -> None:
        super().__init__()
        self.embeddings, self.dim = embeddings, embeddings.dim
        self.pooled_dim = embeddings.pooled.shape[1]

    def encode(self, prompts, *args, **kwargs) -> TextEmbeddings:
        e, n = self.embeddings, len(prompts)
        return TextEmbeddings(
            tokens=e.tokens.expand(n, -1, -1).clone(),
            mask=e.mask.expand(n, -1).clone(),
            pooled=e.pooled.expand(n, -1).clone(),
        )


pytestmark = pytest.mark.usefixtures("single_thread")  # benchmarks/conftest.py


def _hunyuan(tmp_path_factory, *, heads: int, dual: int, single: int, name: str):
    torch.manual_seed(0)
    model = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=heads,
        attention_head_dim=64,
        num_layers=dual,
        num_single_layers=single,
        num_refiner_layers=1,
        patch_size=2,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=TEXT_DIM,
        pooled_projection_dim=POOLED_DIM,
        rope_axes_dim=(16, 24, 24),
    ).eval()
    folder = tmp_path_factory.mktemp(name) / "transformer"
    model.save_pretrained(folder)
    return model, folder


def _embeddings() -> TextEmbeddings:
    g = torch.Generator().manual_seed(1)
    mask = torch.arange(TEXT_LEN)[None] < REAL_TEXT
    return TextEmbeddings(
        tokens=torch.randn(1, TEXT_LEN, TEXT_DIM, generator=g),
        mask=mask,
        pooled=torch.randn(1, POOLED_DIM, generator=g),
    )


def _vae():
    return AutoencoderKLHunyuanVideo(
        latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4
    ).eval()


def _ours(model, vae, sampling: SamplingConfig) -> SkyReelsV4Pipeline:
    return SkyReelsV4Pipeline(
        transformer=model,
        video_vae=DiffusersVideoVae(vae),
        audio_vae=FrameAudioCodec(sample_rate=4000, hop_length=64),
        text_encoder=_FixedTextEncoder(_embeddings()),
        sampling=sampling,
    )


# -- dense: ours vs diffusers -------------------------------------------------------------------
FRAMES, HEIGHT, WIDTH, STEPS = 9, 256, 384, 4
DENSE_SHAPE = f"video 3x16x24 tokens + text {TEXT_LEN}, D 256, 2+2 blocks, {STEPS} steps, CFG 5"
DENSE_GROUP = "t2v 4 steps + CFG (HunyuanVideo-sized branch, D 256)"


@pytest.fixture(scope="module")
def dense_setup(tmp_path_factory):
    theirs, folder = _hunyuan(tmp_path_factory, heads=4, dual=2, single=2, name="dense")
    vae = _vae()
    pipe = HunyuanVideoPipeline(
        text_encoder=None,
        tokenizer=None,
        transformer=theirs,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=None,
        tokenizer_2=None,
    )
    pipe.set_progress_bar_config(disable=True)
    model, _ = transformer_from_hunyuan(folder, audio_latent_channels=64)
    sampling = SamplingConfig(
        num_steps=STEPS,
        shift=7.0,
        schedule=ScheduleForm.SHIFT_ONCE,
        video_guidance=5.0,
        audio_guidance=5.0,
        embedded_guidance=6.0,
    )
    ours = _ours(model, vae, sampling)
    request = GenerationRequest(
        prompt="a red ball", task="t2v", num_frames=FRAMES, height=HEIGHT, width=WIDTH, seed=0
    )
    return pipe, ours, ours.prepare(request)


def _info(benchmark, impl: str, baseline: bool, shape: str) -> None:
    benchmark.extra_info.update(impl=impl, baseline=baseline, shape=shape, dtype="float32", device="cpu")


def test_diffusers_hunyuan_video_pipeline(benchmark, dense_setup):
    pipe, _, prepared = dense_setup
    e = _embeddings()
    benchmark.group = DENSE_GROUP
    _info(benchmark, "diffusers HunyuanVideoPipeline (true CFG, sequential)", True, DENSE_SHAPE)

    def run():
        with torch.no_grad():
            return pipe(
                prompt_embeds=e.tokens,
                pooled_prompt_embeds=e.pooled,
                prompt_attention_mask=e.mask.long(),
                negative_prompt_embeds=e.tokens,
                negative_pooled_prompt_embeds=e.pooled,
                negative_prompt_attention_mask=e.mask.long(),
                true_cfg_scale=5.0,
                height=HEIGHT,
                width=WIDTH,
                num_frames=FRAMES,
                num_inference_steps=STEPS,
                guidance_scale=6.0,
                latents=prepared.video_noise.clone(),
                output_type="latent",
            ).frames

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)


def test_ours_eager(benchmark, dense_setup):
    _, ours, prepared = dense_setup
    benchmark.group = DENSE_GROUP
    _info(benchmark, "SkyReelsV4Pipeline.sample (batched CFG, video branch alone)", False, DENSE_SHAPE)
    benchmark.pedantic(lambda: ours.sample(prepared, progress=False), rounds=5, warmup_rounds=1)


def test_ours_eager_joint_path(benchmark, dense_setup, monkeypatch):
    from skyreels_v4.pipeline import denoise

    _, ours, prepared = dense_setup
    monkeypatch.setattr(denoise, "video_reads_audio", lambda transformer: True)
    benchmark.group = DENSE_GROUP
    _info(benchmark, "SkyReelsV4Pipeline.sample, joint path (+ audio branch, eq. 5)", False, DENSE_SHAPE)
    benchmark.pedantic(lambda: ours.sample(prepared, progress=False), rounds=5, warmup_rounds=1)


def test_ours_compiled_blocks(benchmark, dense_setup):
    _, ours, prepared = dense_setup
    model = ours.transformer
    for block in [*model.video.blocks, *model.audio.blocks]:
        block.compile(dynamic=False)
    benchmark.group = DENSE_GROUP
    _info(benchmark, "SkyReelsV4Pipeline.sample, blocks torch.compile'd", False, DENSE_SHAPE)
    try:
        benchmark.pedantic(lambda: ours.sample(prepared, progress=False), rounds=5, warmup_rounds=2)
    finally:
        for block in [*model.video.blocks, *model.audio.blocks]:
            block.uncompile()  # back to eager for later tests


# -- VSA at 16k video tokens ---------------------------------------------------------------------
VSA_FRAMES, VSA_SIZE = 61, 512  # 16 latent frames x 64 x 64 latents -> 16 x 32 x 32 = 16384 tokens
VSA_SHAPE = f"video 16x32x32 = 16384 tokens + text {TEXT_LEN}, D 128, 1+1 blocks, 1 step, no CFG"
VSA_GROUP = "t2v 1 step, 16k video tokens (D 128)"


@pytest.fixture(scope="module")
def vsa_setup(tmp_path_factory):
    _, folder = _hunyuan(tmp_path_factory, heads=2, dual=1, single=1, name="vsa")
    dense, _ = transformer_from_hunyuan(folder, audio_latent_channels=64)
    sparse = SkyReelsV4Transformer(
        dense.config,
        video_attention=VideoSelfAttentionConfig(
            kind=VideoSelfAttention.VSA, vsa=VSAConfig(sparsity=0.875, backend="cpp")
        ),
    ).eval()
    sparse.load_state_dict(dense.state_dict(), strict=False)  # + zero VSA gates
    sampling = SamplingConfig(
        num_steps=1, shift=7.0, video_guidance=1.0, audio_guidance=1.0, embedded_guidance=6.0
    )
    vae = _vae()
    pipes = {"dense": _ours(dense, vae, sampling), "vsa": _ours(sparse, vae, sampling)}
    request = GenerationRequest(
        prompt="a red ball", task="t2v", num_frames=VSA_FRAMES, height=VSA_SIZE, width=VSA_SIZE, seed=0
    )
    prepared = pipes["dense"].prepare(request)
    assert prepared.video_noise.shape[2:] == (16, 64, 64)
    return pipes, prepared


@pytest.mark.parametrize("kind", ["dense", "vsa"])
def test_ours_video_self_attention(benchmark, vsa_setup, kind):
    pipes, prepared = vsa_setup
    benchmark.group = VSA_GROUP
    impl = "dense SDPA" if kind == "dense" else "VSA sparsity 0.875 (cpp fine stage)"
    _info(benchmark, f"SkyReelsV4Pipeline.sample, {impl}", kind == "dense", VSA_SHAPE)
    pipe = pipes[kind]
    benchmark.pedantic(lambda: pipe.sample(replace(prepared), progress=False), rounds=3, warmup_rounds=1)
