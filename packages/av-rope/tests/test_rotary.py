"""apply_rotary and RotaryEmbedding against the plain references in skyreels_av_rope.reference."""

from __future__ import annotations

import math

import pytest
import torch

from skyreels_av_rope import (
    HUNYUAN_VIDEO_ROPE,
    RotaryConfig,
    RotaryEmbedding,
    apply_rotary,
    apply_rotary_reference,
    axis_frequencies,
    rotary_tables_reference,
    video_grid_positions,
)


def test_axis_frequencies_values() -> None:
    freqs = axis_frequencies(16, 256.0)
    expected = torch.tensor([256.0 ** (-2 * i / 16) for i in range(8)])
    torch.testing.assert_close(freqs, expected, rtol=1e-6, atol=0)
    assert freqs[0] == 1.0
    assert freqs.dtype == torch.float32


def test_tables_match_fp64_reference_on_real_positions(generator: torch.Generator) -> None:
    config = RotaryConfig(axes_dims=(8, 12, 6), theta=100.0)
    positions = torch.randn(2, 17, 3, generator=generator) * 20  # real, negative, batched
    cos, sin = RotaryEmbedding(config)(positions)
    ref_cos, ref_sin = rotary_tables_reference(positions, config)
    assert cos.shape == (2, 17, 13)
    assert cos.dtype == torch.float32
    torch.testing.assert_close(cos.double(), ref_cos, atol=2e-5, rtol=0)
    torch.testing.assert_close(sin.double(), ref_sin, atol=2e-5, rtol=0)


def test_axis_slices_in_order() -> None:
    """Axis a's channel pairs only depend on coordinate a, in axes_dims order (t first)."""
    rope = RotaryEmbedding(RotaryConfig(axes_dims=(4, 6, 2)))
    cos, sin = rope(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0]]))
    torch.testing.assert_close(cos[0], torch.ones(6))
    moved_t = (cos[1] != 1).nonzero().flatten().tolist()
    assert moved_t == [0, 1]  # the 2 pairs of the t axis
    assert (cos[2] != 1).nonzero().flatten().tolist() == [5]  # the single pair of the w axis
    assert sin[2, 5] == pytest.approx(math.sin(3.0))


def test_batched_positions_equal_per_sample(video_rope: RotaryEmbedding) -> None:
    a = video_grid_positions(2, 3, 4)
    b = video_grid_positions(2, 3, 4, t_offset=-5.5)
    cos, sin = video_rope(torch.stack((a, b)))
    cos_b, sin_b = video_rope(b)
    torch.testing.assert_close(cos[1], cos_b, atol=0, rtol=0)
    torch.testing.assert_close(sin[1], sin_b, atol=0, rtol=0)


def test_integer_positions_are_converted(video_rope: RotaryEmbedding) -> None:
    pos = video_grid_positions(2, 2, 2)
    cos_f, _ = video_rope(pos)
    cos_i, _ = video_rope(pos.long())
    torch.testing.assert_close(cos_i, cos_f, atol=0, rtol=0)


def test_module_is_stateless_and_stays_fp32(video_rope: RotaryEmbedding) -> None:
    assert list(video_rope.parameters()) == []
    assert list(video_rope.buffers()) == []
    assert video_rope.state_dict() == {}
    cos, _ = video_rope.to(torch.bfloat16)(video_grid_positions(1, 2, 2))
    assert cos.dtype == torch.float32
    assert "16, 56, 56" in repr(video_rope)


@pytest.mark.parametrize("table_batch", [False, True])
def test_apply_rotary_fp32_matches_complex_reference(generator: torch.Generator, table_batch: bool) -> None:
    x = torch.randn(3, 10, 4, 32, generator=generator)
    shape = (3, 10, 16) if table_batch else (10, 16)
    angle = torch.randn(shape, generator=generator) * 10
    out = apply_rotary(x, angle.cos(), angle.sin())
    ref = apply_rotary_reference(x, angle.cos(), angle.sin())
    assert out.dtype == torch.float32
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    # A rotation keeps each pair's norm.
    torch.testing.assert_close(out.unflatten(-1, (16, 2)).norm(dim=-1), x.unflatten(-1, (16, 2)).norm(dim=-1))


def test_apply_rotary_explicit_pair() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 1, 4)
    angle = torch.tensor([[math.pi / 2, math.pi]])
    out = apply_rotary(x, angle.cos(), angle.sin())
    # (1 + 2i) * i = -2 + 1i ; (3 + 4i) * -1 = -3 - 4i
    torch.testing.assert_close(out.flatten(), torch.tensor([-2.0, 1.0, -3.0, -4.0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_apply_rotary_low_precision_computes_in_fp32(generator: torch.Generator, dtype: torch.dtype) -> None:
    x = torch.randn(2, 64, 3, 128, generator=generator).to(dtype)
    cos, sin = RotaryEmbedding(HUNYUAN_VIDEO_ROPE)(video_grid_positions(4, 4, 4))
    out = apply_rotary(x, cos, sin)
    assert out.dtype == dtype
    ref = apply_rotary_reference(x.float(), cos, sin)
    # fp32 compute then one rounding: at most one half-ulp of the output dtype away from the reference.
    eps = torch.finfo(dtype).eps
    assert ((out.float() - ref).abs() <= ref.abs() * eps + 1e-6).all()
    # ... which is tighter than doing the arithmetic in the low-precision dtype itself.
    c, s = cos.to(dtype)[None, :, None], sin.to(dtype)[None, :, None]
    x0, x1 = x.unflatten(-1, (64, 2)).unbind(-1)
    naive = torch.stack((x0 * c - x1 * s, x1 * c + x0 * s), dim=-1).flatten(-2)
    assert (out.float() - ref).abs().mean() < (naive.float() - ref).abs().mean()


def test_apply_rotary_float64_stays_float64(generator: torch.Generator) -> None:
    x = torch.randn(1, 5, 2, 8, generator=generator, dtype=torch.float64)
    angle = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    out = apply_rotary(x, angle.cos(), angle.sin())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, apply_rotary_reference(x, angle.cos(), angle.sin()), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"axes_dims": (16, 55)}, ValueError, "axes_dims"),
        ({"axes_dims": (0,)}, ValueError, "axes_dims"),
        ({"axes_dims": ()}, TypeError, "axes_dims"),
        ({"axes_dims": [16, 56]}, TypeError, "axes_dims"),
        ({"axes_dims": (16,), "theta": 0.0}, ValueError, "theta"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        RotaryConfig(**kwargs)


def test_config_is_frozen_and_keyword_only() -> None:
    with pytest.raises(TypeError):
        RotaryConfig((16, 56, 56))  # type: ignore[misc]
    with pytest.raises(AttributeError):
        HUNYUAN_VIDEO_ROPE.theta = 10.0  # type: ignore[misc]
    assert HUNYUAN_VIDEO_ROPE.head_dim == 128
    assert HUNYUAN_VIDEO_ROPE.num_axes == 3


def test_embedding_rejects_bad_positions(video_rope: RotaryEmbedding) -> None:
    with pytest.raises(ValueError, match=r"positions: expected shape \[L, 3\]"):
        video_rope(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="positions"):
        video_rope(torch.zeros(5))
    with pytest.raises(TypeError, match="positions"):
        video_rope([[0.0, 0.0, 0.0]])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="positions"):
        video_rope(torch.zeros(5, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="config"):
        RotaryEmbedding((16, 56, 56))  # type: ignore[arg-type]


def test_apply_rotary_rejects_bad_shapes() -> None:
    x = torch.zeros(2, 5, 3, 8)
    table = torch.zeros(5, 4)
    with pytest.raises(ValueError, match=r"x: expected \[B, L, H, D\]"):
        apply_rotary(torch.zeros(5, 3, 8), table, table)
    with pytest.raises(ValueError, match="x: expected"):
        apply_rotary(torch.zeros(2, 5, 3, 7), table, table)
    with pytest.raises(ValueError, match=r"cos/sin: expected \[5, 4\] or \[2, 5, 4\]"):
        apply_rotary(x, torch.zeros(5, 8), torch.zeros(5, 8))
    with pytest.raises(ValueError, match="cos/sin"):
        apply_rotary(x, torch.zeros(3, 5, 4), torch.zeros(3, 5, 4))
    with pytest.raises(ValueError, match="equal shapes"):
        apply_rotary(x, table, torch.zeros(2, 5, 4))
    with pytest.raises(TypeError, match="x: expected a floating-point"):
        apply_rotary(x.long(), table, table)
    with pytest.raises(TypeError, match="cos"):
        apply_rotary(x, table.numpy(), table)  # type: ignore[arg-type]
