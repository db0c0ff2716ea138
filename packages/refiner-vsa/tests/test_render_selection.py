"""The block-selection picture: what it shows is the library's selection, and it renders."""

from __future__ import annotations

import pytest
import torch

from skyreels_refiner_vsa.render_selection import render_selection, selection_example


def _distances(example) -> torch.Tensor:
    coords = example.cube_coords.float()
    return (coords - coords[example.query]).norm(dim=-1)


def test_smooth_content_keeps_the_neighbourhood_and_random_content_does_not():
    smooth, random = selection_example("smooth"), selection_example("random")
    for example in (smooth, random):
        assert len(example.selected) == 32  # 87.5 % of 256 cubes skipped
        top = example.probabilities.topk(32).indices.sort().values.tolist()
        assert example.selected == top  # the kept cubes are the top-K coarse scores
        assert torch.allclose(example.probabilities.sum(), torch.tensor(1.0))
    near = _distances(smooth)
    kept = torch.zeros_like(near, dtype=torch.bool)
    kept[smooth.selected] = True
    assert smooth.query in smooth.selected
    assert near[kept].max() < 3.0 < near[~kept].mean()  # a compact ball around the query cube
    far = _distances(random)
    kept_random = torch.zeros_like(far, dtype=torch.bool)
    kept_random[random.selected] = True
    assert far[kept_random].max() > 4.0  # random content picks cubes anywhere


def test_render_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = render_selection(tmp_path / "images")
    assert path.name == "vsa_selection.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["vsa_selection.png"]  # no temp file left


def test_unknown_content_raises():
    with pytest.raises(ValueError, match="content: expected 'smooth' or 'random', got 'noise'"):
        selection_example("noise")
