"""The README example runs as written (so the documentation cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

import torch


def test_readme_example_runs(capsys):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["video_out"].shape == (2, 16, 3, 8, 8)
    assert namespace["audio_out"].shape == (2, 8, 30)
    assert bool(torch.isfinite(namespace["loss"].total))
    printed = capsys.readouterr().out.split()
    assert float(printed[0]) == float(namespace["loss"].total)
