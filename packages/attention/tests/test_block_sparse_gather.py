"""The `gather` block-sparse backend (gathered blocks + fused SDPA) against the fp32 torch reference.

fp32: forward and gradients match the reference tightly (partial blocks, kv_valid_lengths,
cross-attention, -1 padding, empty rows, non-finite padding). fp16/bf16: the parity rule, max
error against the fp32 reference <= 2x the error of plain torch math in that dtype + a small floor.
"""

from __future__ import annotations

import pytest
import torch

from skyreels_attention.block_sparse import (
    AUTO_PRIORITY,
    block_sparse_attention,
    block_sparse_attention_reference,
    random_block_index,
)
from skyreels_attention.block_sparse.backends import resolve_block_sparse_backend
from skyreels_attention.block_sparse.inputs import validate_block_sparse_inputs

_FLOORS = {torch.float16: 1e-3, torch.bfloat16: 8e-3}


def _case(
    batch, heads, lq, lk, head_dim, block_size, *, dtype=torch.float32, valid=None, seed=0, max_blocks=None
):
    """Random q/k/v (requiring grad), an index with variable counts and -1 padding, valid lengths."""
    gen = torch.Generator().manual_seed(seed)
    nqb, nkb = -(-lq // block_size), -(-lk // block_size)
    index, counts = random_block_index(
        batch, heads, nqb, nkb, max_blocks=max_blocks or max(1, nkb - 1), variable_counts=True, generator=gen
    )
    q, k, v = (
        torch.randn(batch, length, heads, head_dim, generator=gen).to(dtype).requires_grad_()
        for length in (lq, lk, lk)
    )
    valid_lengths = None if valid is None else torch.tensor(valid, dtype=torch.int32)
    return q, k, v, index, counts, valid_lengths


def _reference(q, k, v, index, counts, block_size, valid, compute_dtype=None):
    return block_sparse_attention_reference(
        q, k, v, index, counts, block_size=block_size, kv_valid_lengths=valid,
        scale=q.shape[-1] ** -0.5, compute_dtype=compute_dtype,
    )  # fmt: skip


def _gather(q, k, v, index, counts, block_size, valid):
    return block_sparse_attention(
        q, k, v, index, counts, block_size=block_size, kv_valid_lengths=valid, backend="gather"
    )


def _outputs_and_grads(fn, q, k, v, grad_out):
    out = fn(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), grad_out))


@pytest.mark.parametrize(
    ("batch", "heads", "lq", "lk", "head_dim", "block_size", "valid"),
    [
        (2, 2, 150, 150, 16, 64, None),  # partial last block on both axes
        (2, 1, 200, 200, 8, 32, [130, 200]),  # kv_valid_lengths inside and at a block edge
        (1, 3, 96, 300, 16, 32, [41]),  # cross-attention Lq != Lk, most key blocks invalid
        (2, 2, 256, 128, 32, 64, None),  # whole blocks: may run unmasked
    ],
)
def test_fp32_forward_and_gradients_match_reference(batch, heads, lq, lk, head_dim, block_size, valid):
    q, k, v, index, counts, valid_t = _case(batch, heads, lq, lk, head_dim, block_size, valid=valid)
    counts[0, 0, 0] = 0  # an empty row: output and gradients must be 0
    index[0, 0, 0] = -1
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    got = _outputs_and_grads(lambda *t: _gather(*t, index, counts, block_size, valid_t), q, k, v, grad_out)
    want = _outputs_and_grads(
        lambda *t: _reference(*t, index, counts, block_size, valid_t), q, k, v, grad_out
    )
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g, w, rtol=1e-5, atol=2e-6, msg=lambda m, n=name: f"{n}: {m}")
    assert got[0][0, :block_size, 0].abs().max() == 0
    assert got[1][0, :block_size, 0].abs().max() == 0


def test_full_rows_unmasked_path_matches_reference():
    """Every row uses all C slots and Lk is whole blocks: the no-mask SDPA path."""
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 256, 2, 16, generator=gen) for _ in range(3))
    index, counts = random_block_index(1, 2, 4, 4, max_blocks=2, generator=gen)
    assert bool((counts == 2).all())
    got = _gather(q, k, v, index, counts, 64, None)
    torch.testing.assert_close(got, _reference(q, k, v, index, counts, 64, None), rtol=1e-5, atol=2e-6)


def test_rows_without_valid_keys_and_nonfinite_padding_stay_zero():
    """Selected blocks entirely past the valid length -> 0; NaN/inf padding never leaks (no_grad too)."""
    q, k, v, index, counts, _ = _case(1, 2, 128, 256, 16, 64, max_blocks=2, seed=4)
    index[:] = -1
    counts[:] = 1
    index[..., 0] = 3  # every row selects only the last key block ...
    valid = torch.tensor([150], dtype=torch.int32)  # ... which lies wholly past the valid length
    with torch.no_grad():
        k[:, 150:], v[:, 150:] = float("nan"), float("inf")
        out = _gather(q, k, v, index, counts, 64, valid)
    assert torch.equal(out, torch.zeros_like(out))
    index[0, 0, :, 0] = 2  # head 0 now sees keys 128..149 of block 2, next to the NaN padding
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(2))
    got = _outputs_and_grads(lambda *t: _gather(*t, index, counts, 64, valid), q, k, v, grad_out)
    want = _outputs_and_grads(lambda *t: _reference(*t, index, counts, 64, valid), q, k, v, grad_out)
    for g, w in zip(got, want):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=1e-5, atol=2e-6)
    assert got[0][:, :, 1].abs().max() == 0 and got[0][:, :, 0].abs().max() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_parity_rule(dtype):
    q, k, v, index, counts, valid = _case(2, 2, 200, 170, 32, 32, dtype=dtype, valid=[170, 101], seed=5)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    got = _outputs_and_grads(lambda *t: _gather(*t, index, counts, 32, valid), q, k, v, grad_out)
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    exact = _outputs_and_grads(
        lambda *t: _reference(*t, index, counts, 32, valid), q32, k32, v32, grad_out.float()
    )
    plain = _outputs_and_grads(
        lambda *t: _reference(*t, index, counts, 32, valid, compute_dtype=dtype), q, k, v, grad_out
    )
    for name, g, e, p in zip(("out", "dq", "dk", "dv"), got, exact, plain):
        assert g.dtype == dtype and torch.isfinite(g).all(), name
        err = (g.float() - e).abs().max().item()
        plain_err = (p.float() - e).abs().max().item()
        assert err <= 2 * plain_err + _FLOORS[dtype], f"{name}: {err:.2e} > 2 * {plain_err:.2e} + floor"


def test_cpu_automatic_choice_and_capabilities():
    q, k, v, index, counts, _ = _case(1, 1, 64, 64, 8, 32)
    problem = validate_block_sparse_inputs(q, k, v, index, counts, block_size=32).problem
    assert AUTO_PRIORITY["cpu"] == ("cpp", "gather", "torch")
    assert resolve_block_sparse_backend(problem, "gather").name == "gather"
    with torch.no_grad():
        half = validate_block_sparse_inputs(q.half(), k.half(), v.half(), index, counts, block_size=32)
    assert resolve_block_sparse_backend(half.problem, "gather").name == "gather"
