"""Our Triton block-sparse kernel (forward and backward) against the fp32 torch reference.

On CPU the kernels run under TRITON_INTERPRET=1 (set by the root conftest before any kernel is
imported), in fp32 and fp16 with small shapes; bf16 and larger shapes run only on a GPU.
Parity rule (flash-attention's): the kernel's max error against the fp32 reference is at most
2x the error of plain torch math in the same dtype, plus a tiny absolute floor.
"""

from __future__ import annotations

import pytest
import torch

from skyreels_attention.block_sparse import (
    block_sparse_attention,
    block_sparse_attention_reference,
    block_sparse_backend_status,
    random_block_index,
)

_TRITON_REASONS = block_sparse_backend_status()["triton"]
pytestmark = pytest.mark.skipif(
    bool(_TRITON_REASONS), reason=f"triton backend unavailable: {_TRITON_REASONS}"
)
_CUDA = torch.cuda.is_available()
_DEVICE = "cuda" if _CUDA else "cpu"
_FLOORS = {torch.float32: 2e-5, torch.float16: 1e-4, torch.bfloat16: 1e-3}


def _case(
    batch, heads, lq, lk, head_dim, block_size, *, dtype, valid=None, seed=0, max_blocks=None, device=_DEVICE
):
    """Random q/k/v (requiring grad), an index with variable counts and -1 padding, valid lengths."""
    gen = torch.Generator().manual_seed(seed)
    nqb, nkb = -(-lq // block_size), -(-lk // block_size)
    index, counts = random_block_index(
        batch, heads, nqb, nkb, max_blocks=max_blocks or max(1, nkb - 1), variable_counts=True, generator=gen
    )
    q, k, v = (
        torch.randn(batch, length, heads, head_dim, generator=gen)
        .to(device=device, dtype=dtype)
        .requires_grad_()
        for length in (lq, lk, lk)
    )
    valid_lengths = None if valid is None else torch.tensor(valid, dtype=torch.int32, device=device)
    return q, k, v, index.to(device), counts.to(device), valid_lengths


def _reference(q, k, v, index, counts, block_size, valid, compute_dtype=None):
    return block_sparse_attention_reference(
        q, k, v, index, counts, block_size=block_size, kv_valid_lengths=valid,
        scale=q.shape[-1] ** -0.5, compute_dtype=compute_dtype,
    )  # fmt: skip


def _outputs_and_grads(fn, q, k, v, grad_out):
    out = fn(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), grad_out))


def _check_parity(q, k, v, index, counts, block_size, valid):
    """Triton vs fp32 reference, bounded by 2x the error of plain torch math in q's dtype."""
    dtype = q.dtype
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(q.device, dtype)
    got = _outputs_and_grads(
        lambda *t: block_sparse_attention(
            *t, index, counts, block_size=block_size, kv_valid_lengths=valid, backend="triton"
        ),
        q, k, v, grad_out,
    )  # fmt: skip
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    exact = _outputs_and_grads(
        lambda *t: _reference(*t, index, counts, block_size, valid), q32, k32, v32, grad_out.float()
    )
    plain = _outputs_and_grads(
        lambda *t: _reference(*t, index, counts, block_size, valid, compute_dtype=dtype), q, k, v, grad_out
    )
    for name, g, e, p in zip(("out", "dq", "dk", "dv"), got, exact, plain):
        assert g.dtype == dtype and g.shape == e.shape
        assert torch.isfinite(g).all(), f"{name} has non-finite values"
        err = (g.float() - e).abs().max().item()
        base = (p.float() - e).abs().max().item()
        assert err <= 2 * base + _FLOORS[dtype], f"{name}: error {err:.3g} vs plain {dtype} math {base:.3g}"


# Interpreted cases are small: the interpreter costs ~5 ms per (program x 64-key block).
_CASES = {
    "partial-blocks-valid-lengths": dict(
        batch=2, heads=2, lq=150, lk=150, head_dim=32, block_size=64, valid=[150, 90]
    ),
    "cross-attention-small-blocks": dict(
        batch=1, heads=2, lq=70, lk=130, head_dim=16, block_size=32, valid=None
    ),
    "head-dim-64-block-16": dict(batch=1, heads=2, lq=48, lk=40, head_dim=64, block_size=16, valid=[33]),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", list(_CASES), ids=list(_CASES))
def test_triton_matches_reference(case, dtype):
    spec = dict(_CASES[case])
    valid = spec.pop("valid")
    q, k, v, index, counts, valid_lengths = _case(**spec, dtype=dtype, valid=valid)
    _check_parity(q, k, v, index, counts, spec["block_size"], valid_lengths)


def test_rows_with_nothing_to_attend_are_zero_without_nan():
    q, k, v, index, counts, _ = _case(1, 2, 100, 100, 16, 32, dtype=torch.float32)
    counts[0, 1] = 0  # head 1 selects nothing at all
    valid = torch.tensor([40], dtype=torch.int32, device=_DEVICE)
    index[0, 0, :, 0], counts[0, 0, :] = 3, 1  # head 0 selects only block 3, past the valid length
    out = block_sparse_attention(
        q, k, v, index, counts, block_size=32, kv_valid_lengths=valid, backend="triton"
    )
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    for t in (q, k, v):
        assert torch.equal(t.grad, torch.zeros_like(t.grad))


def test_full_density_equals_dense_attention():
    batch, heads, length, head_dim, block_size = 1, 2, 90, 32, 32
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(batch, length, heads, head_dim, generator=gen).to(_DEVICE) for _ in range(3))
    n = -(-length // block_size)
    index = torch.arange(n, dtype=torch.int32).flip(0).expand(batch, heads, n, n).contiguous().to(_DEVICE)
    counts = torch.full((batch, heads, n), n, dtype=torch.int32, device=_DEVICE)
    out = block_sparse_attention(q, k, v, index, counts, block_size=block_size, backend="triton")
    dense = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    )
    torch.testing.assert_close(out, dense.transpose(1, 2), atol=2e-5, rtol=1e-5)


def test_non_contiguous_inputs():
    """q/k/v views of a [B, H, L, D] tensor (head-major strides) give the same result."""
    q, k, v, index, counts, valid = _case(1, 2, 64, 64, 16, 32, dtype=torch.float32, valid=[50])
    views = [t.detach().transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v)]
    assert not views[0].is_contiguous()
    out = block_sparse_attention(
        *views, index, counts, block_size=32, kv_valid_lengths=valid, backend="triton"
    )
    expected = _reference(q.detach(), k.detach(), v.detach(), index, counts, 32, valid)
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize(
    "dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"]
)
@pytest.mark.parametrize(
    ("length", "head_dim", "block_size"), [(1000, 64, 64), (777, 128, 64), (1500, 64, 128), (300, 32, 32)]
)
def test_triton_matches_reference_on_gpu(dtype, length, head_dim, block_size):
    q, k, v, index, counts, valid = _case(
        2, 3, length, length, head_dim, block_size, dtype=dtype, valid=[length, 500]
    )
    _check_parity(q, k, v, index, counts, block_size, valid)


def test_padding_past_the_valid_length_never_leaks():
    q, k, v, index, counts, valid = _case(1, 2, 64, 80, 16, 32, dtype=torch.float32, valid=[45])
    out = block_sparse_attention(
        q, k, v, index, counts, block_size=32, kv_valid_lengths=valid, backend="triton"
    )
    k2, v2 = k.detach().clone().requires_grad_(False), v.detach().clone()
    with torch.no_grad():
        k2[0, 45:], v2[0, 45:] = float("nan"), float("inf")
    k2.requires_grad_()
    out2 = block_sparse_attention(
        q, k2, v2, index, counts, block_size=32, kv_valid_lengths=valid, backend="triton"
    )
    torch.testing.assert_close(out2, out)
    (grad_k,) = torch.autograd.grad(out2.sum(), k2)
    assert torch.isfinite(grad_k).all() and torch.equal(grad_k[0, 45:], torch.zeros_like(grad_k[0, 45:]))


def test_only_the_requested_gradients_are_computed():
    q, k, v, index, counts, _ = _case(1, 2, 64, 64, 16, 32, dtype=torch.float32)
    k, v = k.detach(), v.detach()
    out = block_sparse_attention(q, k, v, index, counts, block_size=32, backend="triton")
    (grad_q,) = torch.autograd.grad(out.sum(), q)
    ref = _reference(q, k, v, index, counts, 32, None)
    (want,) = torch.autograd.grad(ref.sum(), q)
    torch.testing.assert_close(grad_q, want, atol=2e-5, rtol=1e-5)


@pytest.mark.skipif(_CUDA, reason="interpreter-only: on a GPU the autotuner tries these tiles itself")
@pytest.mark.parametrize(
    ("tile_m", "tile_n", "block_size"),
    [(16, 32, 32), (32, 16, 32), (16, 16, 64), (64, 32, 128)],
    ids=["m16-n32-bs32", "m32-n16-bs32", "several-tiles-per-block-bs64", "m64-n32-bs128"],
)
def test_gpu_tile_shapes_under_the_interpreter(monkeypatch, tile_m, tile_n, block_size):
    """The interpreter normally runs one config with BLOCK_M = BLOCK_N = min(block, 64); the GPU
    configs (unequal tiles, several query tiles and key sub-tiles per block, 128-token blocks)
    would otherwise only run on a GPU."""
    import triton

    from skyreels_attention.block_sparse import triton_op

    calls = []

    def one_config(tiles, size):
        calls.append(size)
        return [triton.Config({"BLOCK_M": tile_m, "BLOCK_N": tile_n}, num_warps=4, num_stages=1)]

    monkeypatch.setattr(triton_op, "_configs", one_config)
    triton_op._tuned.cache_clear()
    try:
        lq, lk = block_size + 9, block_size + 23  # partial last blocks on both axes
        q, k, v, index, counts, valid = _case(
            1, 2, lq, lk, 16, block_size, dtype=torch.float32, valid=[lk - 11]
        )
        _check_parity(q, k, v, index, counts, block_size, valid)
        assert calls == [block_size] * 3  # forward, dq and dk/dv kernels all ran with these tiles
    finally:
        triton_op._tuned.cache_clear()  # later tests get the normal interpreted config again
