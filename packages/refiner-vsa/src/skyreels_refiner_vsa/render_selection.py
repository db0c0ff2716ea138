"""Render the documentation picture of VSA's block selection: which key cubes one query cube keeps.

Two inputs on the same 16x32x32 token grid (4x8x8 cubes), one head, 87.5 % sparsity (K = 32 of 256):
smooth content, where queries and keys are the same random Fourier features of the token's
(t, h, w) position (so the coarse scores fall with distance), and random content. Each row shows
the cube grid as four time slices: colour = the log of the query cube's coarse attention
probability to each key cube, outlined = selected for the fine stage, star = the query cube. The library's own
`cube_tiling`, `coarse_attention` and `select_key_blocks` compute everything.

Run: ``python -m skyreels_refiner_vsa.render_selection --out docs/images/vsa`` (needs matplotlib:
the ``[plot]`` extra; imported only here). The file is written atomically.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from skyreels_refiner_vsa.coarse import coarse_attention
from skyreels_refiner_vsa.selection import keep_block_count, select_key_blocks
from skyreels_refiner_vsa.tiling import cube_tiling

__all__ = ["SelectionExample", "main", "positional_features", "render_selection", "selection_example"]

GRID = (16, 32, 32)
SPARSITY = 0.875


def positional_features(grid: tuple[int, int, int], dim: int = 256, *, bandwidth: float = 0.25) -> Tensor:
    """``[t·h·w, dim]`` random Fourier features of each token's (t, h, w) in grid (t-major) order:
    the dot product of two tokens' features approximates ``exp(-|Δ|² bandwidth² / 2)``, a similarity
    that falls with distance the same way in every direction (fixed seed)."""
    axes = [torch.arange(n, dtype=torch.float64) for n in grid]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)  # [N, 3]
    directions = torch.randn(dim // 2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    angles = coords @ (bandwidth * directions).T  # [N, dim/2]
    return (torch.cat([angles.sin(), angles.cos()], dim=-1) / math.sqrt(dim // 2)).float()


class SelectionExample(NamedTuple):
    """One query cube's view: ``probabilities [nB]`` coarse softmax over key cubes, ``selected``
    the key cubes kept, ``query`` its block index, ``cube_coords [nB, 3]`` each block's cube
    position (t, h, w) in the cube grid."""

    probabilities: Tensor
    selected: list[int]
    query: int
    cube_coords: Tensor


def selection_example(content: str, *, query_cube: tuple[int, int, int] = (1, 3, 4)) -> SelectionExample:
    """The coarse probabilities and the kept key cubes of one query cube for ``content`` in
    {"smooth", "random"} (one head, 87.5 % sparsity on GRID)."""
    tiling = cube_tiling(GRID)
    n = tiling.num_tokens
    if content == "smooth":
        features = positional_features(GRID)[None, :, None, :]  # [1, N, 1, D]
        q = k = features * 8.0  # a softmax sharp enough to prefer the neighbourhood
    elif content == "random":
        gen = torch.Generator().manual_seed(0)
        q, k = (torch.randn(1, n, 1, 48, generator=gen) for _ in range(2))
    else:
        raise ValueError(f"content: expected 'smooth' or 'random', got {content!r}")
    v = torch.zeros_like(q)
    q, k, v = (tiling.tile(x) for x in (q, k, v))
    coarse = coarse_attention(q, k, v, tiling, 1.0 / math.sqrt(q.shape[-1]))
    keep = keep_block_count(tiling.num_blocks, sparsity=SPARSITY)
    index, counts = select_key_blocks(
        coarse.logits, keep, num_video_tokens=n, num_key_tokens=n, block_size=tiling.block_size
    )
    cube_grid = [g // c for g, c in zip(GRID, tiling.cube)]
    cube_coords = torch.stack(
        torch.meshgrid(*(torch.arange(c) for c in cube_grid), indexing="ij"), dim=-1
    ).reshape(-1, 3)  # full cubes come first, in raster order: block i is cube i here
    query = (query_cube[0] * cube_grid[1] + query_cube[1]) * cube_grid[2] + query_cube[2]
    probabilities = coarse.logits[0, 0, query].softmax(-1)
    selected = sorted(index[0, 0, query, : int(counts[0, 0, query])].tolist())
    return SelectionExample(probabilities, selected, query, cube_coords)


def render_selection(out_dir: Path) -> Path:
    """Write ``vsa_selection.png`` into ``out_dir`` (atomically) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    tiling = cube_tiling(GRID)
    cube_grid = [g // c for g, c in zip(GRID, tiling.cube)]
    contents = ("smooth", "random")
    fig, axes = plt.subplots(len(contents), cube_grid[0], figsize=(3.0 * cube_grid[0], 3.3 * len(contents)))
    for row, content in enumerate(contents):
        example = selection_example(content)
        log_probs = example.probabilities.clamp_min(1e-12).log10().reshape(cube_grid).numpy()
        qt, qh, qw = example.cube_coords[example.query].tolist()
        vmin, vmax = float(log_probs.min()), float(log_probs.max())
        for t in range(cube_grid[0]):
            ax = axes[row, t]
            ax.imshow(log_probs[t], cmap="viridis", vmin=vmin, vmax=vmax)
            for block in example.selected:
                bt, bh, bw = example.cube_coords[block].tolist()
                if bt == t:
                    ax.add_patch(Rectangle((bw - 0.5, bh - 0.5), 1, 1, fill=False, ec="orangered", lw=2.5))
            if t == qt:
                ax.plot([qw], [qh], marker="*", color="white", markersize=14, markeredgecolor="black")
            ax.set_xticks([])
            ax.set_yticks([])
            title = f"cube time {t}" if row == 0 else ""
            ax.set_title(title, fontsize=10)
        axes[row, 0].set_ylabel(f"{content} content", fontsize=11)
    keep = keep_block_count(tiling.num_blocks, sparsity=SPARSITY)
    fig.suptitle(
        f"VSA: one query cube (star) on a {'x'.join(map(str, GRID))} token grid, "
        f"{keep} of {tiling.num_blocks} key cubes kept (outlined), colour = log coarse attention",
        fontsize=11,
    )
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "vsa_selection.png"
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".png.tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/vsa"), help="output folder")
    args = parser.parse_args(argv)
    print(render_selection(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
