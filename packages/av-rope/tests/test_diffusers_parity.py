"""Parity with diffusers' HunyuanVideoRotaryPosEmbed and apply_rotary_emb (the public reference).

diffusers returns cos/sin of shape [L, D] with each frequency repeated twice (one per channel of the
interleaved pair); ours are [L, D // 2].
"""

from __future__ import annotations

import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoRotaryPosEmbed

from skyreels_av_rope import RotaryEmbedding, apply_rotary, video_grid_positions

GRIDS = [
    # (latent T, H, W before patching, patch size) -> post-patch grid (T, H/p, W/p)
    (3, 8, 12, 2),  # (3, 4, 6)
    (5, 14, 22, 2),  # (5, 7, 11): non-cubic, every side odd
    (2, 6, 6, 1),  # (2, 6, 6) with patch 1
]


def _diffusers_tables(latent_shape: tuple[int, int, int], patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    module = HunyuanVideoRotaryPosEmbed(patch_size=patch, patch_size_t=1, rope_dim=[16, 56, 56], theta=256.0)
    t, h, w = latent_shape
    return module(torch.zeros(1, 4, t, h, w))


@pytest.mark.parametrize(("t", "h", "w", "patch"), GRIDS)
def test_tables_match_diffusers(video_rope: RotaryEmbedding, t: int, h: int, w: int, patch: int) -> None:
    ref_cos, ref_sin = _diffusers_tables((t, h, w), patch)
    cos, sin = video_rope(video_grid_positions(t, h // patch, w // patch))
    assert ref_cos.shape == (t * (h // patch) * (w // patch), 128)
    torch.testing.assert_close(cos.repeat_interleave(2, dim=-1), ref_cos, atol=1e-6, rtol=0)
    torch.testing.assert_close(sin.repeat_interleave(2, dim=-1), ref_sin, atol=1e-6, rtol=0)
    # The repeated layout really is pairwise: even and odd columns are identical.
    torch.testing.assert_close(ref_cos[:, 0::2], ref_cos[:, 1::2], atol=0, rtol=0)


@pytest.mark.parametrize(("t", "h", "w", "patch"), GRIDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotated_queries_match_diffusers(
    video_rope: RotaryEmbedding, generator: torch.Generator, t: int, h: int, w: int, patch: int, dtype
) -> None:
    ref_cos, ref_sin = _diffusers_tables((t, h, w), patch)
    length = ref_cos.shape[0]
    q = torch.randn(2, length, 3, 128, generator=generator).to(dtype)  # [B, L, H, D]
    expected = apply_rotary_emb(q, (ref_cos, ref_sin), use_real=True, use_real_unbind_dim=-1, sequence_dim=1)
    cos, sin = video_rope(video_grid_positions(t, h // patch, w // patch))
    out = apply_rotary(q, cos, sin)
    assert out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out.float(), expected.float(), atol=tol, rtol=tol)
    # And in diffusers' own [B, H, L, D] layout.
    expected_bhld = apply_rotary_emb(
        q.transpose(1, 2), (ref_cos, ref_sin), use_real=True, use_real_unbind_dim=-1
    )
    torch.testing.assert_close(out.transpose(1, 2).float(), expected_bhld.float(), atol=tol, rtol=tol)
