"""I, M and Concat(V, I, M) (eq. 7); the black-latent cache; audio loss mask; builder errors."""

from __future__ import annotations

import gc

import pytest
import torch

from skyreels_inpaint_conditioning import (
    BlackLatentCache,
    ConditioningShapeError,
    ImageToVideo,
    PoolingVideoVae,
    StartEndInterpolation,
    TaskParameterError,
    TextToVideo,
    VideoEditing,
    VideoExtension,
    black_image_latent,
    build_inpaint_condition,
    concat_inpaint_input,
    video_from_keyframes,
)


def test_conditional_latents_are_encoder_output_or_black(pooling_vae, random_video) -> None:
    keep = torch.ones(32, 48, dtype=torch.bool)
    keep[4:20, 8:40] = False
    cond = build_inpaint_condition(VideoEditing(keep_mask=keep), vae=pooling_vae, source_video=random_video)
    m = cond.latent_mask.bool().expand_as(cond.conditional_latents)
    full = pooling_vae.encode(random_video)  # cell-local encoder: kept cells see only kept pixels
    black = pooling_vae.weight @ torch.full((3,), -1.0) + pooling_vae.bias  # hand-computed black latent [C]
    torch.testing.assert_close(cond.conditional_latents[m], full[m])
    got_black = cond.conditional_latents.permute(0, 2, 3, 4, 1)[~cond.latent_mask.bool()[:, 0]]
    torch.testing.assert_close(got_black, black.expand_as(got_black))
    # The conditional pixels are the source where kept and black elsewhere.
    torch.testing.assert_close(cond.conditional_pixels[:, :, :, 0, 0], random_video[:, :, :, 0, 0])
    assert bool((cond.conditional_pixels[:, :, :, 10, 20] == -1).all())


def test_concat_order_and_channels(pooling_vae, random_video) -> None:
    cond = build_inpaint_condition(ImageToVideo(), vae=pooling_vae, source_video=random_video)
    v = torch.randn(2, 4, 5, 4, 6, dtype=torch.float64)
    z = cond.concat(v)
    assert z.shape == (2, 2 * 4 + 1, 5, 4, 6)
    assert z.dtype == torch.float64  # V's dtype
    torch.testing.assert_close(z[:, :4], v)
    torch.testing.assert_close(z[:, 4:8], cond.conditional_latents.double())
    torch.testing.assert_close(z[:, 8:], cond.latent_mask.double())
    assert z[:, 8, 0].eq(1).all()
    assert z[:, 8, 1:].eq(0).all()
    with pytest.raises(
        ConditioningShapeError, match=r"conditional_latents: expected the noisy latents' shape"
    ):
        concat_inpaint_input(v[:, :3], cond.conditional_latents, cond.latent_mask)
    with pytest.raises(ConditioningShapeError, match=r"latent_mask: expected shape \(2, 1, 5, 4, 6\)"):
        concat_inpaint_input(v, cond.conditional_latents, cond.latent_mask[:, :, :4])


def test_loss_masks(pooling_vae, random_video) -> None:
    cond = build_inpaint_condition(
        VideoExtension(num_kept_frames=5), vae=pooling_vae, source_video=random_video, num_audio_latents=44
    )
    torch.testing.assert_close(cond.video_loss_mask, 1 - cond.latent_mask)
    assert cond.video_loss_mask[:, :, :2].eq(0).all()
    assert cond.video_loss_mask[:, :, 2:].eq(1).all()
    # Paper 3.2: inpainting is video-only, the whole audio track is generated.
    assert cond.audio_loss_mask is not None
    assert cond.audio_loss_mask.shape == (2, 1, 44)
    assert cond.audio_loss_mask.eq(1).all()
    no_audio = build_inpaint_condition(ImageToVideo(), vae=pooling_vae, source_video=random_video)
    assert no_audio.audio_loss_mask is None


def test_per_sample_tasks_and_text_to_video_without_video(pooling_vae, random_video) -> None:
    cond = build_inpaint_condition(
        [TextToVideo(), StartEndInterpolation()], vae=pooling_vae, source_video=random_video
    )
    assert cond.latent_mask[0].eq(0).all()
    assert cond.latent_mask[1, 0, :, 0, 0].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    calls = pooling_vae.num_encode_calls
    t2v = build_inpaint_condition(TextToVideo(), vae=pooling_vae, video_shape=(3, 17, 32, 48))
    assert pooling_vae.num_encode_calls == calls  # nothing to encode, black latent already cached
    black = black_image_latent(pooling_vae, height=32, width=48)
    torch.testing.assert_close(t2v.conditional_latents, black.expand(3, -1, 5, -1, -1))
    assert t2v.conditional_pixels.eq(-1).all()
    t2v64 = build_inpaint_condition(
        TextToVideo(), vae=pooling_vae, video_shape=(1, 5, 32, 48), dtype=torch.float64
    )
    assert t2v64.conditional_latents.dtype == torch.float64
    assert t2v64.latent_mask.dtype == torch.float64


def test_black_latent_cache_encodes_once_and_forgets_dead_vaes(random_video) -> None:
    cache = BlackLatentCache()
    vae = PoolingVideoVae(seed=3)
    a = cache.get(vae, height=32, width=48, dtype=torch.float32, device="cpu")
    b = cache.get(vae, height=32, width=48, dtype=torch.float32, device="cpu")
    assert a is b
    assert vae.num_encode_calls == 1
    assert a.shape == (1, 4, 1, 4, 6)
    cache.get(vae, height=16, width=16, dtype=torch.float32, device="cpu")
    cache.get(vae, height=32, width=48, dtype=torch.float64, device="cpu")
    assert vae.num_encode_calls == 3
    assert len(cache) == 3
    for _ in range(3):
        build_inpaint_condition(TextToVideo(), vae=vae, video_shape=(1, 5, 32, 48), black_latents=cache)
    assert vae.num_encode_calls == 3
    del vae
    gc.collect()
    assert len(cache) == 0  # keyed weakly: the VAE is not kept alive


def test_builder_errors(pooling_vae, random_video) -> None:
    with pytest.raises(
        TaskParameterError, match="source_video: task\\[0\\] \\(image_to_video\\) keeps pixels"
    ):
        build_inpaint_condition(ImageToVideo(), vae=pooling_vae, video_shape=(1, 17, 32, 48))
    with pytest.raises(TypeError, match="dtype, device: follow source_video"):
        build_inpaint_condition(
            TextToVideo(), vae=pooling_vae, source_video=random_video, dtype=torch.float16
        )
    with pytest.raises(TypeError, match="exactly one"):
        build_inpaint_condition(TextToVideo(), vae=pooling_vae)
    with pytest.raises(ValueError, match=r"source_video: expected pixel values in \[-1, 1\]"):
        build_inpaint_condition(TextToVideo(), vae=pooling_vae, source_video=random_video * 255)
    with pytest.raises(ConditioningShapeError, match=r"source_video: expected shape \[B, 3, F, H, W\]"):
        build_inpaint_condition(TextToVideo(), vae=pooling_vae, source_video=random_video[:, :2])
    with pytest.raises(ConditioningShapeError, match="F = 1 \\+ 4k"):
        build_inpaint_condition(TextToVideo(), vae=pooling_vae, source_video=random_video[:, :, :16])
    with pytest.raises(ConditioningShapeError, match="task: expected one TaskSpec or 2"):
        build_inpaint_condition([TextToVideo()] * 3, vae=pooling_vae, source_video=random_video)
    with pytest.raises(TypeError, match="VideoVae protocol"):
        build_inpaint_condition(TextToVideo(), vae=object(), video_shape=(1, 5, 8, 8))


def test_video_from_keyframes() -> None:
    start, end = torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.5)
    video = video_from_keyframes({0: start, **{13 + j: end for j in range(4)}}, num_frames=17)
    assert video.shape == (1, 3, 17, 8, 8)
    assert video[:, :, 0].eq(0).all()
    assert video[:, :, 13:].eq(0.5).all()
    assert video[:, :, 1:13].eq(-1).all()
    with pytest.raises(ConditioningShapeError, match=r"frame index 17 is outside 0\.\.16"):
        video_from_keyframes({17: start}, num_frames=17)
