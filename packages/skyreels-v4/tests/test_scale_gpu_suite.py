"""benchmarks/gpu_suite.py on a machine without CUDA (issue 15): the command says why it measured
nothing, exits 0 and leaves docs/benchmarks.md alone; the table and the marked-section rewrite it
uses on a GPU machine are checked on made-up rows."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]


def load_suite():
    spec = importlib.util.spec_from_file_location("_gpu_suite", ROOT / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA path")
def test_without_cuda_the_command_exits_cleanly_and_writes_nothing():
    doc = ROOT / "docs" / "benchmarks.md"
    before = doc.read_bytes() if doc.exists() else None
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_suite", "--quick"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no CUDA device visible" in done.stderr and "scripts/gpu_benchmarks.sh" in done.stderr
    assert (doc.read_bytes() if doc.exists() else None) == before


def test_table_and_marked_section(tmp_path):
    suite = load_suite()
    rows = [
        suite.Row("attention L=16384", "sdpa (dense)", 10.0),
        suite.Row("attention L=16384", "block-sparse triton 87.5%", 2.5, "sdpa (dense)"),
        suite.Row("attention L=16384", "block-sparse flex 87.5%", None, "sdpa (dense)", "failed: X"),
    ]
    text = suite.table(rows, "1 x Test GPU")
    assert "**1 x Test GPU**" in text
    assert "| block-sparse triton 87.5% | 2.500 | 4.00x vs sdpa (dense) |" in text
    assert "| 10.000 | baseline |" in text and "failed: X" in text
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nCPU table\n")
    suite.write_section("first", doc)
    suite.write_section("second", doc)
    content = doc.read_text()
    assert content.startswith("# Benchmarks\n\nCPU table\n")
    assert content.count(suite.BEGIN) == 1 and "second" in content and "first" not in content
