"""block_sparse_attention: the torch reference against an independent dense oracle, the index
helpers, input validation and backend dispatch (Triton and flex have their own test files)."""

from __future__ import annotations

import pytest
import torch

from skyreels_attention.block_sparse import (
    BlockSparseBackendError,
    block_sparse_attention,
    block_sparse_backend_capabilities,
    block_sparse_backend_status,
    blocks_to_keep,
    random_block_index,
    reverse_block_index,
    selection_table,
)
from skyreels_attention.block_sparse.backends import resolve_block_sparse_backend
from skyreels_attention.block_sparse.inputs import validate_block_sparse_inputs


def dense_oracle(q, k, v, block_index, block_counts, block_size, kv_valid_lengths=None, scale=None):
    """The small dense form, built with Python loops from the index: fp64 masked softmax attention.

    Rows with no allowed key are 0 (the op's documented behaviour).
    """
    batch, lq, heads, head_dim = q.shape
    lk = k.shape[1]
    allowed = torch.zeros(batch, heads, lq, lk, dtype=torch.bool)
    for b in range(batch):
        for h in range(heads):
            for i in range(block_index.shape[2]):
                for j in block_index[b, h, i, : int(block_counts[b, h, i])].tolist():
                    allowed[
                        b, h, i * block_size : (i + 1) * block_size, j * block_size : (j + 1) * block_size
                    ] = True
            if kv_valid_lengths is not None:
                allowed[b, :, :, int(kv_valid_lengths[b]) :] = False
    q64, k64, v64 = (t.double().transpose(1, 2) for t in (q, k, v))
    scores = q64 @ k64.transpose(-1, -2) * (scale if scale is not None else head_dim**-0.5)
    any_allowed = allowed.any(-1, keepdim=True)
    scores = torch.where(any_allowed, scores.masked_fill(~allowed, float("-inf")), 0.0)
    weights = torch.softmax(scores, dim=-1) * allowed
    return (weights @ v64).transpose(1, 2)


def _inputs(batch, heads, lq, lk, head_dim, block_size, *, seed=0, max_blocks=None):
    gen = torch.Generator().manual_seed(seed)
    nqb, nkb = -(-lq // block_size), -(-lk // block_size)
    index, counts = random_block_index(
        batch, heads, nqb, nkb, max_blocks=max_blocks or max(1, nkb - 1), variable_counts=True, generator=gen
    )
    q, k, v = (torch.randn(batch, n, heads, head_dim, generator=gen).requires_grad_() for n in (lq, lk, lk))
    return q, k, v, index, counts


_ORACLE_CASES = {
    "partial-last-block": dict(batch=2, heads=2, lq=150, lk=150, head_dim=16, block_size=32, valid=None),
    "valid-lengths": dict(batch=2, heads=3, lq=130, lk=130, head_dim=16, block_size=32, valid=[130, 71]),
    "cross-attention": dict(batch=1, heads=2, lq=70, lk=200, head_dim=32, block_size=16, valid=[190]),
    "one-block-each": dict(batch=1, heads=1, lq=40, lk=40, head_dim=8, block_size=64, valid=[33]),
}


@pytest.mark.parametrize("case", list(_ORACLE_CASES), ids=list(_ORACLE_CASES))
def test_torch_backend_matches_dense_oracle(case):
    spec = dict(_ORACLE_CASES[case])
    valid = spec.pop("valid")
    block_size = spec["block_size"]
    q, k, v, index, counts = _inputs(**spec)
    counts[0, 0] = 0  # one head of one sample selects no block at all
    index[0, 0] = -1
    valid_t = None if valid is None else torch.tensor(valid)
    scale = 0.3
    out = block_sparse_attention(
        q, k, v, index, counts, block_size=block_size, kv_valid_lengths=valid_t, scale=scale, backend="torch"
    )
    expected = dense_oracle(q, k, v, index, counts, block_size, valid_t, scale)
    torch.testing.assert_close(out.double(), expected, atol=2e-6, rtol=1e-5)
    assert torch.equal(out[0, :, 0], torch.zeros_like(out[0, :, 0]))  # the head with zero blocks

    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    got = torch.autograd.grad(out, (q, k, v), grad_out)
    want = torch.autograd.grad(expected, (q, k, v), grad_out.double())
    for name, g, w in zip("qkv", got, want):
        assert torch.isfinite(g).all(), f"d{name} has non-finite values"
        torch.testing.assert_close(g.double(), w.double(), atol=1e-5, rtol=1e-5)


def test_keys_past_the_valid_length_are_ignored():
    q, k, v, index, counts = _inputs(2, 2, 100, 100, 16, 32)
    valid = torch.tensor([77, 100])
    out = block_sparse_attention(q, k, v, index, counts, block_size=32, kv_valid_lengths=valid)
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[0, 77:], v2[0, 77:] = 1e3, float("nan")  # padding garbage must not leak in
    out2 = block_sparse_attention(q, k2, v2, index, counts, block_size=32, kv_valid_lengths=valid)
    torch.testing.assert_close(out2, out)


def test_full_density_equals_sdpa():
    """Every block selected = dense attention (torch's SDPA, with a key padding mask)."""
    q, k, v, _, _ = _inputs(2, 2, 100, 120, 16, 32)
    n_q, n_k = 4, 4
    index = torch.arange(n_k, dtype=torch.int32).expand(2, 2, n_q, n_k).contiguous()
    counts = torch.full((2, 2, n_q), n_k, dtype=torch.int32)
    valid = torch.tensor([120, 61])
    out = block_sparse_attention(
        q, k, v, index, counts, block_size=32, kv_valid_lengths=valid, backend="torch"
    )
    keep = (torch.arange(120)[None, :] < valid[:, None])[:, None, None, :]
    dense = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=keep
    ).transpose(1, 2)
    torch.testing.assert_close(out, dense, atol=2e-6, rtol=1e-5)


def test_reference_gradcheck_float64():
    q, k, v, index, counts = _inputs(1, 2, 20, 28, 4, 8)
    q, k, v = (t.detach().double().requires_grad_() for t in (q, k, v))
    valid = torch.tensor([21])

    def fn(q, k, v):
        return block_sparse_attention(
            q, k, v, index, counts, block_size=8, kv_valid_lengths=valid, backend="torch"
        )

    assert torch.autograd.gradcheck(fn, (q, k, v), fast_mode=True)


def test_low_precision_inputs_return_their_dtype():
    q, k, v, index, counts = _inputs(1, 2, 64, 64, 16, 32)
    q16, k16, v16 = (t.detach().to(torch.bfloat16) for t in (q, k, v))
    out = block_sparse_attention(q16, k16, v16, index, counts, block_size=32, backend="torch")
    assert out.dtype == torch.bfloat16
    expected = dense_oracle(q16.float(), k16.float(), v16.float(), index, counts, 32)
    torch.testing.assert_close(out.double(), expected, atol=1e-2, rtol=1e-2)


# --- index helpers -----------------------------------------------------------------------------


def test_reverse_block_index_lists_the_selecting_query_blocks():
    _, _, _, index, counts = _inputs(2, 3, 200, 150, 8, 32, max_blocks=4)
    query_index, query_counts = reverse_block_index(index, counts, 5)
    for b in range(2):
        for h in range(3):
            for j in range(5):
                expected = [i for i in range(7) if j in index[b, h, i, : int(counts[b, h, i])].tolist()]
                n = int(query_counts[b, h, j])
                assert query_index[b, h, j, :n].tolist() == expected
                assert (query_index[b, h, j, n:] == -1).all()
    table = selection_table(index, counts, 5)
    assert table.shape == (2, 3, 7, 5) and torch.equal(table.sum(-1), counts.long())


@pytest.mark.parametrize(
    ("sparsity", "n_blocks", "keep"),
    [(0.875, 64, 8), (0.9, 40, 4), (0.75, 128, 32), (0.9, 64, 7), (0.0, 5, 5)],
)
def test_blocks_to_keep(sparsity, n_blocks, keep):
    assert blocks_to_keep(sparsity, n_blocks) == keep


def test_random_block_index_is_distinct_and_padded():
    index, counts = random_block_index(
        2, 2, 6, 9, max_blocks=5, variable_counts=True, generator=torch.Generator()
    )
    assert index.dtype == counts.dtype == torch.int32 and index.shape == (2, 2, 6, 5)
    for row, count in zip(index.reshape(-1, 5).tolist(), counts.reshape(-1).tolist()):
        assert len(set(row[:count])) == count and all(0 <= j < 9 for j in row[:count])
        assert row[count:] == [-1] * (5 - count)


# --- validation --------------------------------------------------------------------------------


def _good():
    q = torch.randn(1, 70, 2, 16)
    index = torch.tensor([[0, 1], [1, -1]], dtype=torch.int32).expand(1, 2, 2, 2).contiguous()
    counts = torch.tensor([2, 1], dtype=torch.int32).expand(1, 2, 2).contiguous()
    return dict(q=q, k=q.clone(), v=q.clone(), block_index=index, block_counts=counts)


def _bad_index(value, row=0, slot=1):
    args = _good()
    args["block_index"] = args["block_index"].clone()
    args["block_index"][0, 0, row, slot] = value
    return args


def _with(**changes):
    return {**_good(), **changes}


_BAD_INPUTS = {
    "q not a tensor": (lambda: _with(q=[1.0]), {}, TypeError, "q must be a torch.Tensor"),
    "q 3 dims": (
        lambda: _with(q=torch.randn(70, 2, 16)),
        {},
        ValueError,
        r"q must have shape \[B, L, H, D\]",
    ),
    "q int dtype": (
        lambda: _with(q=torch.ones(1, 70, 2, 16, dtype=torch.int64)),
        {},
        TypeError,
        "q must be a float16",
    ),
    "k and v differ": (
        lambda: _with(v=torch.randn(1, 64, 2, 16)),
        {},
        ValueError,
        "k and v must have the same shape",
    ),
    "k heads differ": (
        lambda: _with(k=torch.randn(1, 70, 3, 16), v=torch.randn(1, 70, 3, 16)),
        {},
        ValueError,
        "k/v must be",
    ),
    "mixed dtypes": (lambda: _with(k=torch.randn(1, 70, 2, 16).double()), {}, TypeError, "share one dtype"),
    "index wrong shape": (
        lambda: _with(block_index=torch.zeros(1, 2, 3, 2, dtype=torch.int32)),
        {},
        ValueError,
        r"block_index must have shape \[B=1, H=2, nQB=2",
    ),
    "index float": (
        lambda: _with(block_index=torch.zeros(1, 2, 2, 2)),
        {},
        TypeError,
        "block_index must be an int32",
    ),
    "counts wrong shape": (
        lambda: _with(block_counts=torch.ones(1, 2, 3, dtype=torch.int32)),
        {},
        ValueError,
        "block_counts must have",
    ),
    "counts too large": (
        lambda: _with(block_counts=torch.full((1, 2, 2), 3, dtype=torch.int32)),
        {},
        ValueError,
        r"block_counts must lie in \[0, min\(C=2, nKB=2\)\]",
    ),
    "counts negative": (
        lambda: _with(block_counts=torch.full((1, 2, 2), -1, dtype=torch.int32)),
        {},
        ValueError,
        "block_counts",
    ),
    "index out of range": (
        lambda: _bad_index(2),
        {},
        ValueError,
        r"block_index entries must lie in \[-1, nKB=2\)",
    ),
    "padding inside count": (lambda: _bad_index(-1), {}, ValueError, "block_index has -1 padding"),
    "duplicate block": (lambda: _bad_index(0), {}, ValueError, "same key block twice"),
    "block_size zero": (_good, {"block_size": 0}, ValueError, "block_size must be a positive int"),
    "block_size float": (_good, {"block_size": 64.0}, ValueError, "block_size must be a positive int"),
    "valid length too long": (
        _good,
        {"kv_valid_lengths": torch.tensor([71])},
        ValueError,
        r"kv_valid_lengths must lie in \[0, Lk=70\]",
    ),
    "valid length shape": (
        _good,
        {"kv_valid_lengths": torch.tensor([70, 70])},
        ValueError,
        r"kv_valid_lengths must have shape \[B=1\]",
    ),
    "valid length float": (
        _good,
        {"kv_valid_lengths": torch.tensor([7.0])},
        TypeError,
        "kv_valid_lengths must be",
    ),
    "scale nan": (_good, {"scale": float("nan")}, ValueError, "scale must be a finite float"),
    "unknown backend": (
        _good,
        {"backend": "cuda"},
        ValueError,
        "backend must be one of torch, gather, cpp, flex, triton",
    ),
}


@pytest.mark.parametrize("case", list(_BAD_INPUTS), ids=list(_BAD_INPUTS))
def test_bad_inputs_raise_naming_the_argument(case):
    make_args, kwargs, error, match = _BAD_INPUTS[case]
    with pytest.raises(error, match=match):
        block_sparse_attention(**make_args(), **kwargs)


def test_good_inputs_pass_validation_with_int64_index():
    args = _good()
    expected = block_sparse_attention(**args)  # int32 index
    args["block_index"], args["block_counts"] = args["block_index"].long(), args["block_counts"].long()
    out = block_sparse_attention(**args)
    assert out.shape == (1, 70, 2, 16)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


# --- dispatch ----------------------------------------------------------------------------------


def _problem(dtype=torch.float32, head_dim=16, block_size=64, requires_grad=False):
    args = _good()
    q = torch.randn(1, 70, 2, head_dim, dtype=dtype, requires_grad=requires_grad)
    args.update(q=q, k=q.detach().clone(), v=q.detach().clone())
    if block_size != 64:
        n = -(-70 // block_size)
        args["block_index"] = torch.zeros(1, 2, n, 1, dtype=torch.int32)
        args["block_counts"] = torch.ones(1, 2, n, dtype=torch.int32)
    return validate_block_sparse_inputs(**args, block_size=block_size).problem


def test_auto_picks_cpp_on_cpu_and_the_reference_for_float64():
    # Where the C++ kernel cannot be built (no compiler or ninja), gather takes fp32 instead.
    cpp_ok = not block_sparse_backend_status()["cpp"]
    assert resolve_block_sparse_backend(_problem(), None).name == ("cpp" if cpp_ok else "gather")
    assert resolve_block_sparse_backend(_problem(dtype=torch.float64), None).name == "torch"


def test_requested_backend_lists_every_reason():
    problem = _problem(dtype=torch.float64, head_dim=24, block_size=48)
    with pytest.raises(BlockSparseBackendError) as info:
        resolve_block_sparse_backend(problem, "triton")
    reasons = info.value.reasons["triton"]
    text = str(info.value)
    for expected in (
        "dtype float64 not supported",
        "head dim 24 not supported",
        "block_size 48 not supported",
    ):
        assert any(expected in r for r in reasons), reasons
        assert expected in text
    assert isinstance(info.value, ValueError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_triton_on_cpu_without_the_interpreter_raises(monkeypatch):
    pytest.importorskip("triton")
    from skyreels_attention.block_sparse import triton_op

    monkeypatch.setattr(triton_op, "INTERPRETED", False)
    assert any("no CUDA device" in r for r in block_sparse_backend_status()["triton"])
    with pytest.raises(BlockSparseBackendError, match="device 'cpu' not supported"):
        block_sparse_attention(**_good(), backend="triton")


def test_status_and_capabilities_cover_every_backend():
    status = block_sparse_backend_status()
    assert set(status) == {"torch", "gather", "cpp", "flex", "triton"}
    assert status["torch"] == status["gather"] == []
    caps = block_sparse_backend_capabilities()
    assert caps["flex"]["backward"] == "cuda"
    assert caps["triton"]["head dims"] == "16, 32, 64, 128"


def test_reverse_block_index_equals_the_dense_table_transpose():
    """The O(entries) construction gives exactly the transposed selection table, in order."""
    from skyreels_attention.block_sparse.index import ordered_blocks

    gen = torch.Generator().manual_seed(11)
    for n_q, n_k, width in ((7, 5, 4), (40, 33, 9), (1, 3, 3)):
        index, counts = random_block_index(
            2, 3, n_q, n_k, max_blocks=width, variable_counts=True, generator=gen
        )
        got_index, got_counts = reverse_block_index(index, counts, n_k)
        want_index, want_counts = ordered_blocks(selection_table(index, counts, n_k).transpose(-1, -2))
        assert torch.equal(got_counts, want_counts)
        assert torch.equal(got_index, want_index)
