"""The pixel -> latent mask reduction: loop oracle parity, hand-checked cases, errors."""

from __future__ import annotations

import pytest
import torch

from skyreels_inpaint_conditioning import (
    ConditioningShapeError,
    MaskValueError,
    latent_frame_span,
    latent_grid_size,
    latent_num_frames,
    reduce_pixel_mask_to_latent,
    reduce_pixel_mask_to_latent_loop,
)


@pytest.mark.parametrize(("frames", "tf", "sf"), [(17, 4, 8), (9, 4, 4), (1, 4, 8), (7, 2, 2)])
@pytest.mark.parametrize("density", [0.5, 0.97])
def test_matches_loop_oracle(frames: int, tf: int, sf: int, density: float) -> None:
    gen = torch.Generator().manual_seed(frames * 100 + sf)
    # Dense masks so that some cells are fully kept, others not.
    mask = torch.rand(2, 1, frames, 3 * sf, 2 * sf, generator=gen) < density
    got = reduce_pixel_mask_to_latent(mask, temporal_factor=tf, spatial_factor=sf)
    want = reduce_pixel_mask_to_latent_loop(mask, temporal_factor=tf, spatial_factor=sf)
    assert got.dtype == torch.bool
    torch.testing.assert_close(got.float(), want, rtol=0, atol=0)
    if density > 0.9 and frames > 1:
        assert 0 < int(got.sum()) < got.numel()  # the case exercises both outcomes


def test_causal_grouping_by_hand() -> None:
    # Only pixel frame 0 and frames 5..8 kept: latent 0 and latent 2 are conditions, latent 1 is not.
    mask = torch.zeros(1, 1, 9, 8, 8)
    mask[:, :, 0] = 1
    mask[:, :, 5:9] = 1
    got = reduce_pixel_mask_to_latent(mask)
    assert got.dtype == torch.float32
    assert got.flatten().tolist() == [1.0, 0.0, 1.0]
    # One missing pixel anywhere in a group turns the whole latent cell into "generate".
    mask[0, 0, 6, 7, 7] = 0
    assert reduce_pixel_mask_to_latent(mask).flatten().tolist() == [1.0, 0.0, 0.0]


def test_spatial_cells_are_conservative() -> None:
    mask = torch.ones(1, 1, 1, 16, 16, dtype=torch.bool)
    mask[0, 0, 0, 3, 12] = False  # falls in latent cell (0, 1)
    got = reduce_pixel_mask_to_latent(mask)
    assert got[0, 0, 0].tolist() == [[True, False], [True, True]]


def test_spans_and_counts() -> None:
    assert latent_num_frames(81) == 21
    assert latent_num_frames(1) == 1
    assert list(latent_frame_span(0)) == [0]
    assert list(latent_frame_span(1)) == [1, 2, 3, 4]
    assert list(latent_frame_span(5)) == [17, 18, 19, 20]
    assert latent_grid_size(17, 480, 832) == (5, 60, 104)


def test_errors_name_the_problem() -> None:
    with pytest.raises(ConditioningShapeError, match=r"F = 1 \+ 4k.*got F=10.*9 and 13"):
        latent_num_frames(10)
    with pytest.raises(ConditioningShapeError, match=r"height: expected a positive multiple of .* 8, got 12"):
        reduce_pixel_mask_to_latent(torch.ones(1, 1, 5, 12, 16))
    with pytest.raises(ConditioningShapeError, match=r"pixel_mask: expected shape \[B, 1, F, H, W\]"):
        reduce_pixel_mask_to_latent(torch.ones(1, 5, 8, 8))
    with pytest.raises(MaskValueError, match=r"binary.*0\.5"):
        reduce_pixel_mask_to_latent(torch.full((1, 1, 1, 8, 8), 0.5))
    with pytest.raises(ConditioningShapeError, match="temporal_factor"):
        latent_num_frames(5, temporal_factor=0)
