"""Patch embeddings, widening, unpatchify, timestep/condition embeddings, text refiner, text masks."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.embeddings import get_timestep_embedding

from skyreels_mmdit_blocks import (
    AudioPatchEmbed,
    ConditionEmbedding,
    VideoGrid,
    VideoPatchEmbed,
    masked_mean,
    patchify_video,
    sinusoidal_timestep_embedding,
    text_lengths_from_mask,
    unpatchify_audio,
    unpatchify_video,
    widen_patch_embed,
)


def test_video_patch_embed_is_a_linear_map_of_patchified_features():
    embed = VideoPatchEmbed(in_channels=3, dim=8, patch_size=(1, 2, 2))
    latents = torch.randn(2, 3, 3, 6, 10)
    tokens, grid = embed(latents)
    assert grid == VideoGrid(3, 3, 5)
    expected = patchify_video(latents, (1, 2, 2)) @ embed.proj.weight.reshape(8, -1).T + embed.proj.bias
    assert (tokens - expected).abs().max().item() <= 1e-5


def test_unpatchify_inverts_patchify_with_feature_order_c_pt_ph_pw():
    latents = torch.arange(2 * 3 * 4 * 6 * 10, dtype=torch.float32).reshape(2, 3, 4, 6, 10)
    features = patchify_video(latents, (2, 2, 2))
    assert torch.equal(unpatchify_video(features, VideoGrid(2, 3, 5), (2, 2, 2)), latents)
    # Feature order (C, p_t, p_h, p_w): feature 1 of token 0 is channel 0, frame 0, row 0, column 1.
    assert features[0, 0, 1] == latents[0, 0, 0, 0, 1]
    assert features[0, 0, 8] == latents[0, 1, 0, 0, 0]


def test_unpatchify_matches_diffusers_output_reshape():
    grid, (pt, p), channels = VideoGrid(3, 3, 5), (1, 2), 4
    tokens = torch.randn(2, 45, channels * pt * p * p)
    theirs = tokens.reshape(2, *grid, -1, pt, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)
    theirs = theirs.flatten(6, 7).flatten(4, 5).flatten(2, 3)  # diffusers HunyuanVideo unpatchify
    assert torch.equal(unpatchify_video(tokens, grid, (pt, p, p)), theirs)


def test_audio_patch_embed_and_unpatchify():
    embed = AudioPatchEmbed(in_channels=5, dim=8, patch_size=2)
    latents = torch.randn(2, 5, 12)
    tokens, length = embed(latents)
    assert length == 6
    features = latents.reshape(2, 5, 6, 2).permute(0, 2, 1, 3).reshape(2, 6, 10)  # (C, p) per token
    expected = features @ embed.proj.weight.reshape(8, 10).T + embed.proj.bias
    assert (tokens - expected).abs().max().item() <= 1e-5
    assert torch.equal(unpatchify_audio(features, 2), latents)


@pytest.mark.parametrize("embed_class", [VideoPatchEmbed, AudioPatchEmbed])
def test_widening_keeps_tokens_for_any_new_channel_values(embed_class):
    embed = embed_class(in_channels=4, dim=8)
    wide = widen_patch_embed(embed, 9)
    shape = (2, 4, 2, 4, 6) if embed_class is VideoPatchEmbed else (2, 4, 7)
    latents = torch.randn(shape)
    extra = 100.0 * torch.randn(shape[0], 5, *shape[2:])
    assert torch.equal(wide(torch.cat([latents, extra], dim=1))[0], embed(latents)[0])
    assert torch.equal(wide.proj.weight[:, :4], embed.proj.weight)
    assert wide.proj.weight[:, 4:].abs().max() == 0
    with pytest.raises(ValueError, match="in_channels must be >= the current 4"):
        widen_patch_embed(embed, 3)


def test_patch_embed_rejects_bad_latents():
    embed = VideoPatchEmbed(in_channels=4, dim=8)
    with pytest.raises(ValueError, match=r"video_latents must have 4 channels; got 3"):
        embed(torch.zeros(1, 3, 2, 4, 4))
    with pytest.raises(ValueError, match=r"\(T, H, W\) = \(2, 5, 4\) must be divisible by the patch size"):
        embed(torch.zeros(1, 4, 2, 5, 4))
    with pytest.raises(ValueError, match=r"must be \[B, C, T, H, W\]"):
        embed(torch.zeros(4, 2, 4, 4))


def test_sinusoidal_embedding_matches_diffusers():
    t = torch.tensor([0.0, 1.0, 250.5, 999.0])
    expected = get_timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert (sinusoidal_timestep_embedding(t) - expected).abs().max().item() <= 1e-6


def test_condition_embedding_matches_diffusers(hunyuan_model, our_branch):
    t, pooled, guidance = torch.tensor([937.5, 20.0]), torch.randn(2, 12), torch.tensor([6000.0, 1000.0])
    expected, _ = hunyuan_model.time_text_embed(t, pooled, guidance)
    got = our_branch.condition(t, pooled_text=pooled, guidance=guidance)
    assert (got - expected).abs().max().item() <= 1e-5


def test_condition_embedding_rejects_inconsistent_inputs():
    with_guidance = ConditionEmbedding(dim=8, pooled_text_dim=4, guidance=True)
    without = ConditionEmbedding(dim=8, pooled_text_dim=None, guidance=False)
    t = torch.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="guidance \\[B\\] is required"):
        with_guidance(t, pooled_text=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="pooled_text \\[B, 4\\] is required"):
        with_guidance(t, guidance=t)
    with pytest.raises(ValueError, match="no guidance embedding"):
        without(t, guidance=t)
    with pytest.raises(ValueError, match="no pooled-text embedding"):
        without(t, pooled_text=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"pooled_text must have shape \[2, 4\]; got \(2, 5\)"):
        with_guidance(t, pooled_text=torch.zeros(2, 5), guidance=t)
    with pytest.raises(ValueError, match="timestep must be a 1-D tensor"):
        without(torch.tensor(3.0))


def test_text_refiner_matches_diffusers_on_real_tokens(hunyuan_model, our_branch):
    """diffusers lets padded query rows attend key 0, we let them attend the real keys; only the
    padded rows differ, and they never reach the video tokens (their keys are masked)."""
    text, t = torch.randn(2, 7, 24), torch.tensor([937.5, 20.0])
    lengths = torch.tensor([7, 3])
    mask = (torch.arange(7)[None, :] < lengths[:, None]).long()
    expected = hunyuan_model.context_embedder(text, t, mask)
    got = our_branch.text_embed(text, t, lengths)
    assert (got[0] - expected[0]).abs().max().item() <= 1e-5
    assert (got[1, :3] - expected[1, :3]).abs().max().item() <= 1e-5


def test_masked_mean_is_the_mean_of_the_real_tokens():
    x = torch.randn(3, 5, 4)
    lengths = torch.tensor([5, 1, 3])
    expected = torch.stack([x[b, :n].mean(0) for b, n in enumerate(lengths.tolist())])
    assert (masked_mean(x, lengths) - expected).abs().max().item() <= 1e-6
    assert torch.equal(masked_mean(x, None), x.mean(1))


def test_text_lengths_from_mask():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert text_lengths_from_mask(mask, batch=2, text_len=3).tolist() == [3, 1]
    assert text_lengths_from_mask(mask.bool(), batch=2, text_len=3).tolist() == [3, 1]
    with pytest.raises(ValueError, match="right-padded"):
        text_lengths_from_mask(torch.tensor([[1, 0, 1]]), batch=1, text_len=3)
    with pytest.raises(ValueError, match="no real token"):
        text_lengths_from_mask(torch.tensor([[0, 0, 0]]), batch=1, text_len=3)
    with pytest.raises(ValueError, match="only 0 and 1"):
        text_lengths_from_mask(torch.tensor([[2, 1, 0]]), batch=1, text_len=3)
    with pytest.raises(ValueError, match=r"text_mask must have shape \[2, 3\]; got \(2, 4\)"):
        text_lengths_from_mask(torch.ones(2, 4), batch=2, text_len=3)
