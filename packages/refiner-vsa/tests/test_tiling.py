"""Cube tiling: a permutation of the grid; the first blocks are exact cubes, the padding is at the end."""

from __future__ import annotations

import math

import pytest
import torch

from skyreels_refiner_vsa import cube_tiling

GRIDS = [(4, 4, 4), (8, 8, 4), (5, 6, 7), (1, 9, 13), (3, 3, 3), (9, 4, 10), (2, 17, 5)]


def _coords(grid):
    t, h, w = grid
    tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([tt.flatten(), hh.flatten(), ww.flatten()], dim=1)


@pytest.mark.parametrize("grid", GRIDS)
def test_tile_untile_round_trip(grid):
    tiling = cube_tiling(grid)
    x = torch.randn(2, math.prod(grid), 3, 5)
    tiled = tiling.tile(x)
    assert torch.equal(tiled, x[:, tiling.order])
    torch.testing.assert_close(tiling.untile(tiled), x, rtol=0, atol=0)
    assert sorted(tiling.order.tolist()) == list(range(math.prod(grid)))


@pytest.mark.parametrize("grid", GRIDS)
def test_full_cubes_first_and_exact(grid):
    tiling = cube_tiling(grid)
    coords = _coords(grid)[tiling.order]  # coordinates in tiled order
    expected_full = math.prod(g // 4 for g in grid)
    assert tiling.num_full_cubes == expected_full
    for block in range(expected_full):
        c = coords[block * 64 : (block + 1) * 64]
        lo = c.min(0).values
        # 64 distinct tokens spanning exactly a 4x4x4 box aligned to the cube grid, raster inside.
        assert (c.max(0).values - lo).tolist() == [3, 3, 3] and (lo % 4 == 0).all()
        assert c.unique(dim=0).shape[0] == 64
        raster = ((c[:, 0] - lo[0]) * 16 + (c[:, 1] - lo[1]) * 4 + (c[:, 2] - lo[2])).tolist()
        assert raster == list(range(64))
    # Cubes are in raster order of the cube grid.
    starts = [coords[b * 64].tolist() for b in range(expected_full)]
    assert starts == sorted(starts)


@pytest.mark.parametrize("grid", GRIDS)
def test_partial_tokens_follow_in_cube_order_and_counts(grid):
    tiling = cube_tiling(grid)
    n = math.prod(grid)
    coords = _coords(grid)[tiling.order]
    rest = coords[tiling.num_full_cubes * 64 :]
    cube_ids = [tuple((c // 4).tolist()) for c in rest]
    assert cube_ids == sorted(cube_ids)  # grouped by partial cube, cubes in raster order
    assert tiling.num_blocks == math.ceil(n / 64)
    expected_counts = [64.0] * (tiling.num_blocks - 1) + [float(n - 64 * (tiling.num_blocks - 1))]
    assert tiling.tokens_per_block.tolist() == expected_counts
    assert torch.equal(tiling.block_of_token[tiling.order], torch.arange(n) // 64)


def test_pad_to_blocks_puts_zeros_only_at_the_end():
    tiling = cube_tiling((5, 6, 7))  # 210 tokens -> 4 blocks, the last with 18
    x = torch.randn(1, 210, 2)
    blocks = tiling.pad_to_blocks(x)
    assert blocks.shape == (1, 4, 64, 2)
    assert torch.equal(blocks.flatten(1, 2)[:, :210], x)
    assert torch.count_nonzero(blocks[:, 3, 18:]) == 0


def test_other_cube_shapes():
    tiling = cube_tiling((2, 8, 8), cube=(1, 4, 4))
    assert tiling.block_size == 16 and tiling.num_full_cubes == 8
    c = _coords((2, 8, 8))[tiling.order][:16]
    assert c[:, 0].eq(0).all() and c[:, 1].max() == 3 and c[:, 2].max() == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grid": (4, 4)}, "grid must be three positive ints"),
        ({"grid": (4, 0, 4)}, "grid must be three positive ints"),
        ({"grid": (4, 4, 4), "cube": (4, 4, True)}, "cube must be three positive ints"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cube_tiling(**kwargs)


def test_tile_rejects_wrong_token_count():
    with pytest.raises(ValueError, match=r"x must have N = t·h·w = 210 tokens"):
        cube_tiling((5, 6, 7)).tile(torch.zeros(1, 200, 2))
