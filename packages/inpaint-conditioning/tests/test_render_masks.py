"""The documentation renderer runs and writes non-trivial PNGs."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyreels_inpaint_conditioning import render_masks


def test_render_writes_pngs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    assert render_masks.main(["--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["edit_masks.png", "reference_positions.png", "task_masks.png"]  # no temp files left
    for name in names:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 10_000
