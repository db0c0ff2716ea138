"""Chunked encode/decode agree with whole-clip processing away from the blends, stay bounded in them,
and keep peak activation size independent of clip length."""

import itertools

import pytest
import torch

from skyreels_audio_vae import (
    chunk_windows,
    chunked_decode,
    chunked_encode,
    decoder_receptive_radius,
    encoder_receptive_radius,
)

HOP = 1024


def _blend_mask(num_latents: int, chunk: int, overlap: int, per_latent: int) -> torch.Tensor:
    mask = torch.zeros(num_latents * per_latent, dtype=torch.bool)
    for start, _ in chunk_windows(num_latents, chunk_latents=chunk, overlap_latents=overlap)[1:]:
        mask[start * per_latent : (start + overlap) * per_latent] = True
    return mask


def test_windows_tile_the_clip_with_exact_overlaps():
    assert chunk_windows(40, chunk_latents=16, overlap_latents=6) == [(0, 16), (10, 26), (20, 36), (30, 40)]
    assert chunk_windows(10, chunk_latents=16, overlap_latents=6) == [(0, 10)]
    assert chunk_windows(16, chunk_latents=16, overlap_latents=0) == [(0, 16)]
    for n in range(1, 60):
        windows = chunk_windows(n, chunk_latents=9, overlap_latents=3)
        assert windows[0][0] == 0 and windows[-1][1] == n
        assert all(b[0] == a[1] - 3 for a, b in itertools.pairwise(windows))
        assert all(3 < e - s <= 9 for s, e in windows[1:])
    with pytest.raises(
        ValueError, match=r"overlap_latents: expected at most chunk_latents // 2 = 2 .* got 4"
    ):
        chunk_windows(10, chunk_latents=4, overlap_latents=4)
    with pytest.raises(
        ValueError, match=r"overlap_latents: expected at most chunk_latents // 2 = 5 .* got 6"
    ):
        chunk_windows(40, chunk_latents=10, overlap_latents=6)  # three windows would overlap


def test_receptive_radius_bounds_the_influence_of_a_perturbation(random_micro_vae):
    model = random_micro_vae
    r_enc, r_dec = encoder_receptive_radius(model.config), decoder_receptive_radius(model.config)
    assert (r_enc, r_dec) == (5, 7)
    torch.manual_seed(0)
    x = torch.randn(1, 1, 30 * HOP)
    bumped = x.clone()
    bumped[..., 15 * HOP + 100] += 1.0
    with torch.no_grad():
        changed = (model.encoder_output(bumped) - model.encoder_output(x)).abs().amax(dim=1)[0] > 0
        assert changed[15] and not changed[: 15 - r_enc].any() and not changed[15 + r_enc + 1 :].any()
        z = torch.randn(1, 4, 30)
        z_bumped = z.clone()
        z_bumped[..., 15] += 1.0
        changed = (model.decode(z_bumped) - model.decode(z)).abs()[0, 0] > 0
        changed_latents = changed.reshape(30, HOP).any(dim=1)
        assert changed_latents[15] and not changed_latents[: 15 - r_dec].any()
        assert not changed_latents[15 + r_dec + 1 :].any()


@pytest.mark.parametrize("side", ["encode", "decode"])
def test_chunked_matches_whole_clip_away_from_blends_and_is_bounded_in_them(random_micro_vae, side):
    model = random_micro_vae
    torch.manual_seed(1)
    n, chunk = 48, 20
    radius = (
        encoder_receptive_radius(model.config) if side == "encode" else decoder_receptive_radius(model.config)
    )
    overlap = radius + 1
    with torch.no_grad():
        if side == "encode":
            x = torch.randn(2, 1, n * HOP)
            whole = model.encode(x).mean
            chunked = chunked_encode(model, x, chunk_latents=chunk, overlap_latents=overlap).mean
            per_latent = 1
        else:
            z = torch.randn(2, 4, n)
            whole = model.decode(z)
            chunked = chunked_decode(model, z, chunk_latents=chunk, overlap_latents=overlap)
            per_latent = HOP
    blend = _blend_mask(n, chunk, overlap, per_latent)
    error = (chunked - whole).abs().amax(dim=(0, 1))
    scale = whole.abs().amax()
    assert blend.any() and (~blend).any()
    assert error[~blend].max() <= 1e-5 * scale  # exact up to float rounding outside the blends
    assert 0 < error[blend].max() <= 0.25 * scale  # windows' edge errors, damped by the crossfade
    # and the blend is no worse than the worse of the two windows taken alone (a convex combination)
    hard_cut = _hard_cut(model, side, x if side == "encode" else z, n, chunk, overlap)
    assert error[blend].max() <= (hard_cut - whole).abs().amax() + 1e-6 * scale


def _hard_cut(model, side, inputs, n, chunk, overlap):
    """Each window computed alone and pasted without crossfade (later windows overwrite)."""
    pieces = []
    for start, end in chunk_windows(n, chunk_latents=chunk, overlap_latents=overlap):
        if side == "encode":
            pieces.append((start, model.encode(inputs[..., start * HOP : end * HOP]).mean))
        else:
            pieces.append((start * HOP, model.decode(inputs[..., start:end])))
    out = torch.zeros_like(model.encode(inputs).mean if side == "encode" else model.decode(inputs))
    for start, piece in pieces:
        out[..., start : start + piece.shape[-1]] = piece
    return out


def test_wide_overlap_makes_blend_centres_exact(random_micro_vae):
    model = random_micro_vae
    radius = decoder_receptive_radius(model.config)
    z = torch.randn(1, 4, 60)
    with torch.no_grad():
        whole = model.decode(z)
        chunked = chunked_decode(model, z, chunk_latents=4 * radius + 4, overlap_latents=2 * radius + 2)
    for start, _ in chunk_windows(60, chunk_latents=4 * radius + 4, overlap_latents=2 * radius + 2)[1:]:
        centre = slice((start + radius) * HOP, (start + radius + 2) * HOP)
        torch.testing.assert_close(
            chunked[..., centre], whole[..., centre], rtol=0, atol=1e-5 * whole.abs().max()
        )


def test_peak_activation_does_not_grow_with_clip_length(random_micro_vae):
    model = random_micro_vae
    sizes: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, o: sizes.append(o.numel()))
        for m in model.modules()
        if not list(m.children())
    ]
    peaks = {}
    with torch.no_grad():
        for n in (24, 48):
            for mode in ("whole", "chunked"):
                sizes.clear()
                x = torch.randn(1, 1, n * HOP)
                if mode == "whole":
                    model.decode(model.encode(x).mean)
                else:
                    z = chunked_encode(model, x, chunk_latents=16, overlap_latents=6).mean
                    chunked_decode(model, z, chunk_latents=16, overlap_latents=6)
                peaks[(n, mode)] = max(sizes)
    for h in hooks:
        h.remove()
    assert peaks[(48, "whole")] == 2 * peaks[(24, "whole")]
    assert (
        peaks[(48, "chunked")] == peaks[(24, "chunked")] == 4 * 16 * HOP
    )  # [1, 4 ch, 16 latents * hop] (first encoder stage)


@pytest.mark.parametrize(("chunk", "overlap"), [(10, 5), (10, 3), (9, 4), (16, 6), (4, 2), (7, 0)])
def test_crossfade_weights_sum_to_one_for_every_allowed_overlap(chunk, overlap):
    """Overlap-adding the identity on ones gives exactly ones (within rounding) for any clip length."""
    from skyreels_audio_vae.chunked import _overlap_add

    for num in (chunk - 1, chunk, chunk + 1, 3 * chunk + 2, 47):
        ones = torch.ones(1, 1, num * 3, dtype=torch.float64)
        out = _overlap_add(
            lambda x: x, ones, num_latents=num, in_per_latent=3, out_per_latent=3,
            chunk_latents=chunk, overlap_latents=overlap,
        )  # fmt: skip
        torch.testing.assert_close(out, ones, rtol=0, atol=1e-12)
