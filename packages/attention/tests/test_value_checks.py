"""The value-check switch: on by default, off process-wide or inside a block, restored afterwards."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from skyreels_attention import (
    KeyPaddingMask,
    attention,
    block_sparse_attention,
    set_value_checks,
    value_checks,
    value_checks_enabled,
)


def _bad_key_padding():
    q = torch.randn(2, 5, 2, 8)
    return q, KeyPaddingMask(valid_lengths=torch.tensor([5, 9]))  # 9 > Lk = 5


def _bad_block_index():
    q = torch.randn(1, 100, 1, 8)
    index = torch.tensor([[[[0, 0], [1, -1]]]], dtype=torch.int32)  # block 0 listed twice
    counts = torch.tensor([[[2, 1]]], dtype=torch.int32)
    return q, index, counts


def test_on_by_default_and_errors_name_the_argument():
    assert value_checks_enabled()
    q, mask = _bad_key_padding()
    with pytest.raises(ValueError, match=r"KeyPaddingMask.valid_lengths: expected values in \[0, Lk=5\]"):
        attention(q, q, q, mask=mask, backend="sdpa")
    q, index, counts = _bad_block_index()
    with pytest.raises(ValueError, match="same key block twice"):
        block_sparse_attention(q, q, q, index, counts, block_size=64, backend="torch")


def test_switched_off_inside_a_block_and_restored():
    q, mask = _bad_key_padding()
    qb, index, counts = _bad_block_index()
    with value_checks(False):
        assert not value_checks_enabled()
        out = attention(q, q, q, mask=mask, backend="sdpa")  # no error: values are not read
        assert out.shape == q.shape
        sparse = block_sparse_attention(qb, qb, qb, index, counts, block_size=64, backend="torch")
        assert sparse.shape == qb.shape
    assert value_checks_enabled()
    with pytest.raises(ValueError):
        attention(q, q, q, mask=mask, backend="sdpa")


def test_process_wide_switch_and_its_type_check():
    try:
        set_value_checks(False)
        assert not value_checks_enabled()
    finally:
        set_value_checks(True)
    with pytest.raises(TypeError, match="enabled: expected a bool, got int"):
        set_value_checks(0)  # type: ignore[arg-type]


def test_environment_variable_switches_it_off():
    code = "import skyreels_attention as a; print(a.value_checks_enabled())"
    env = {"SKYREELS_ATTENTION_VALUE_CHECKS": "0", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_dense_api_checks_block_mask_values_like_the_block_sparse_op():
    from skyreels_attention import BlockMask

    q = torch.randn(2, 100, 1, 8)
    good = {"block_index": torch.tensor([[[[0, -1], [1, 0]]]] * 2, dtype=torch.int32)}
    counts = torch.tensor([[[1, 2]]] * 2, dtype=torch.int32)
    attention(q, q, q, mask=BlockMask(good["block_index"], counts), backend="sdpa")  # valid
    bad_cases = {
        "index == nKB": (torch.tensor([[[[2, -1], [1, 0]]]] * 2, dtype=torch.int32), counts, None),
        "-1 inside the count": (torch.tensor([[[[0, -1], [-1, 0]]]] * 2, dtype=torch.int32), counts, None),
        "count > width": (good["block_index"], torch.tensor([[[1, 3]]] * 2, dtype=torch.int32), None),
        "valid length > Lk": (good["block_index"], counts, torch.tensor([100, 101])),
    }
    for name, (index, cnt, valid) in bad_cases.items():
        with pytest.raises(ValueError):
            attention(q, q, q, mask=BlockMask(index, cnt, kv_valid_lengths=valid), backend="sdpa")
        with value_checks(False):  # switched off: not read (no error, no sync)
            if name != "index == nKB":
                attention(q, q, q, mask=BlockMask(index, cnt, kv_valid_lengths=valid), backend="sdpa")
    with pytest.raises(
        ValueError, match=r"BlockMask.kv_valid_lengths: expected shape \[B\] = \[2\], got \[1\]"
    ):
        attention(q, q, q, mask=BlockMask(good["block_index"], counts, kv_valid_lengths=torch.tensor([5])))
    with pytest.raises(ValueError, match=r"BlockMask\.block_size: expected a positive int, got 0"):
        BlockMask(good["block_index"], counts, block_size=0)
    with pytest.raises(TypeError, match=r"BlockMask\.block_counts: expected an integer tensor"):
        BlockMask(good["block_index"], counts.float())
