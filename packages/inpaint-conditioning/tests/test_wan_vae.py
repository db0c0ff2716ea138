"""The VideoVae protocol against a real causal VAE: a tiny random diffusers AutoencoderKLWan."""

from __future__ import annotations

import torch

from skyreels_inpaint_conditioning import (
    BlackLatentCache,
    ImageToVideo,
    VideoEditing,
    VideoExtension,
    VideoVae,
    black_image_latent,
    build_inpaint_condition,
)


def _video(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 17, 32, 32, generator=gen) * 2 - 1


def test_protocol_and_black_latent_facts(tiny_wan_vae) -> None:
    vae = tiny_wan_vae
    assert isinstance(vae, VideoVae)
    black = black_image_latent(vae, height=32, width=32, cache=BlackLatentCache())
    assert black.shape == (1, 4, 1, 4, 4)
    clip = vae.encode(torch.full((1, 3, 17, 32, 32), -1.0))
    # First-frame property of a causal VAE: latent 0 of a black clip IS the black image latent.
    torch.testing.assert_close(clip[:, :, :1], black, rtol=0, atol=1e-6)
    # But later latents of a black clip are not (the causal context differs per position), which is
    # why eq. 7's "black image latents" are defined from one frame (docs/decisions/0005).
    assert float((clip[:, :, 1:] - black).abs().amax()) > 1e-3


def test_causal_prefix(tiny_wan_vae) -> None:
    video = _video(0)
    full = tiny_wan_vae.encode(video)
    torch.testing.assert_close(tiny_wan_vae.encode(video[:, :, :9]), full[:, :, :3], rtol=0, atol=1e-5)


def test_builder_with_wan(tiny_wan_vae) -> None:
    vae, video = tiny_wan_vae, _video(1)
    black = black_image_latent(vae, height=32, width=32)
    full = vae.encode(video)

    i2v = build_inpaint_condition(ImageToVideo(), vae=vae, source_video=video)
    torch.testing.assert_close(
        i2v.conditional_latents[:, :, :1], vae.encode(video[:, :, :1]), rtol=0, atol=1e-5
    )
    torch.testing.assert_close(i2v.conditional_latents[:, :, 1:], black.expand(1, -1, 4, -1, -1))

    # Extension: kept latents equal encoding the full source (causal: later frames cannot leak in).
    ext = build_inpaint_condition(VideoExtension(num_kept_frames=5), vae=vae, source_video=video)
    torch.testing.assert_close(ext.conditional_latents[:, :, :2], full[:, :, :2], rtol=0, atol=1e-5)
    torch.testing.assert_close(ext.conditional_latents[:, :, 2:], black.expand(1, -1, 3, -1, -1))

    # Editing: kept cells come from the masked video. With a real VAE they differ from encoding the
    # full source next to the edit (receptive field), i.e. encoding the masked video prevents a leak.
    keep = torch.ones(32, 32, dtype=torch.bool)
    keep[8:24, 8:24] = False
    edit = build_inpaint_condition(VideoEditing(keep_mask=keep), vae=vae, source_video=video)
    m = edit.latent_mask.bool().expand_as(edit.conditional_latents)
    masked = torch.where(keep, video, torch.full_like(video, -1.0))
    torch.testing.assert_close(edit.conditional_latents[m], vae.encode(masked)[m], rtol=0, atol=1e-5)
    assert float((edit.conditional_latents[m] - full[m]).abs().amax()) > 1e-3
    ring = torch.tensor([[1.0, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]])
    torch.testing.assert_close(edit.latent_mask[0, 0], ring.expand(5, 4, 4))
