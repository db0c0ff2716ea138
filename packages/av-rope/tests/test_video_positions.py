"""Video grid, reference (paper eq. 9) and keyframe positions."""

from __future__ import annotations

import pytest
import torch

from skyreels_av_rope import (
    grid_positions_from_axes,
    in_context_video_positions,
    keyframe_positions,
    reference_positions,
    video_grid_positions,
)


def test_video_grid_is_t_major() -> None:
    pos = video_grid_positions(2, 3, 4)
    assert pos.shape == (24, 3)
    assert pos.dtype == torch.float32
    # Row (i * H + j) * W + k holds (i, j, k): t slowest, w fastest.
    for i in range(2):
        for j in range(3):
            for k in range(4):
                assert pos[(i * 3 + j) * 4 + k].tolist() == [i, j, k]


def test_video_grid_matches_flatten_order_of_a_latent() -> None:
    t, h, w = 3, 2, 5
    latent = torch.arange(t * h * w).reshape(1, 1, t, h, w)  # [B, C, T, H, W]
    tokens = latent.flatten(2).transpose(1, 2)[0, :, 0]  # "b c t h w -> b (t h w) c"
    pos = video_grid_positions(t, h, w).long()
    torch.testing.assert_close(latent[0, 0][pos[:, 0], pos[:, 1], pos[:, 2]], tokens)


def test_video_grid_offset() -> None:
    pos = video_grid_positions(2, 1, 1, t_offset=-2.5)
    assert pos[:, 0].tolist() == [-2.5, -1.5]


def test_reference_positions_follow_eq9() -> None:
    # Two images (t=1) and a 3-latent clip: N_cond = 5 latent frames, t = -5 + i.
    grids = [(1, 2, 3), (3, 2, 2), (1, 1, 2)]
    pos = reference_positions(grids)
    assert pos.shape == (1 * 2 * 3 + 3 * 2 * 2 + 1 * 1 * 2, 3)
    t = pos[:, 0]
    assert (t < 0).all()
    assert (t[1:] >= t[:-1]).all()  # ordered: each reference before the next, all before t = 0
    assert t.unique().tolist() == [-5.0, -4.0, -3.0, -2.0, -1.0]
    # Each reference is its own grid shifted to its run of negative t, spatial indices preserved.
    torch.testing.assert_close(pos[:6], video_grid_positions(1, 2, 3, t_offset=-5.0))
    torch.testing.assert_close(pos[6:18], video_grid_positions(3, 2, 2, t_offset=-4.0))
    torch.testing.assert_close(pos[18:], video_grid_positions(1, 1, 2, t_offset=-1.0))


def test_single_reference_image_sits_at_minus_one() -> None:
    pos = reference_positions([(1, 2, 2)])
    assert pos[:, 0].tolist() == [-1.0] * 4
    assert pos[:, 1:].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_in_context_positions_prepend_references() -> None:
    pos = in_context_video_positions([(1, 2, 2), (2, 2, 2)], (3, 2, 2))
    assert pos.shape == (4 + 8 + 12, 3)
    torch.testing.assert_close(pos[:12], reference_positions([(1, 2, 2), (2, 2, 2)]))
    torch.testing.assert_close(pos[12:], video_grid_positions(3, 2, 2))
    assert pos[:, 0].unique().tolist() == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0]
    torch.testing.assert_close(in_context_video_positions([], (3, 2, 2)), video_grid_positions(3, 2, 2))
    with pytest.raises(ValueError, match="video_grid"):
        in_context_video_positions([], (3, 2))


def test_keyframes_at_2x_centres_align() -> None:
    pos = keyframe_positions([0, 7.5], hi_res_hw=(4, 6), lo_res_hw=(2, 3))
    assert pos.shape == (2 * 24, 3)
    assert pos[:24, 0].unique().tolist() == [0.0]
    assert pos[24:, 0].unique().tolist() == [7.5]
    rows = pos[:24, 1].reshape(4, 6)[:, 0]
    assert rows.tolist() == [-0.25, 0.25, 0.75, 1.25]
    # The 2x2 hi-res tokens inside low-res cell (r, c) average to exactly (r, c).
    grid = pos[:24, 1:].reshape(2, 2, 3, 2, 2).mean(dim=(1, 3))  # [H_lo, W_lo, 2]
    expected = video_grid_positions(1, 2, 3)[:, 1:].reshape(2, 3, 2)
    torch.testing.assert_close(grid, expected)


def test_keyframes_corner_alignment_and_identity() -> None:
    corners = keyframe_positions([3], hi_res_hw=(3, 2), lo_res_hw=(2, 1), align="corners")
    assert corners[:, 1].tolist() == pytest.approx([0, 0, 2 / 3, 2 / 3, 4 / 3, 4 / 3])
    assert corners[:, 2].tolist() == [0, 0.5, 0, 0.5, 0, 0.5]
    same = keyframe_positions([2], hi_res_hw=(3, 4), lo_res_hw=(3, 4))
    torch.testing.assert_close(same, video_grid_positions(1, 3, 4, t_offset=2.0))


def test_grid_positions_from_axes_takes_real_values() -> None:
    pos = grid_positions_from_axes(torch.tensor([0.5]), torch.tensor([-1.0, 2.0]), torch.tensor([3.25]))
    assert pos.tolist() == [[0.5, -1.0, 3.25], [0.5, 2.0, 3.25]]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: video_grid_positions(0, 2, 2), ValueError, "t: expected a positive int"),
        (lambda: video_grid_positions(2, 2.0, 2), TypeError, "h: expected a positive int"),
        (lambda: video_grid_positions(2, 2, 2, t_offset=float("nan")), TypeError, "t_offset"),
        (lambda: reference_positions([]), ValueError, "grids"),
        (lambda: reference_positions([(1, 2)]), ValueError, r"grids\[0\]"),
        (lambda: reference_positions([(1, 2, 2), (0, 2, 2)]), ValueError, r"grids\[1\]\[0\]"),
        (lambda: keyframe_positions([], (4, 4), (2, 2)), ValueError, "frame_indices"),
        (lambda: keyframe_positions(3, (4, 4), (2, 2)), TypeError, "frame_indices"),
        (lambda: keyframe_positions(["a"], (4, 4), (2, 2)), TypeError, r"frame_indices\[0\]"),
        (lambda: keyframe_positions([0], (4,), (2, 2)), ValueError, "hi_res_hw"),
        (lambda: keyframe_positions([0], (4, 4), (2, -2)), ValueError, r"lo_res_hw\[1\]"),
        (lambda: keyframe_positions([0], (4, 4), (2, 2), align="middle"), ValueError, "align"),
        (
            lambda: grid_positions_from_axes(torch.zeros(2, 2), torch.zeros(2), torch.zeros(2)),
            ValueError,
            "t_values",
        ),
    ],
)
def test_bad_input_errors(call, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()
