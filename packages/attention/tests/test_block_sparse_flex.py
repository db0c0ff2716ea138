"""The flex backend (torch.compile'd flex_attention with a BlockMask) against the torch reference.

Compiling costs ~9 s the first time and ~3 s per new shape on CPU, so the CPU test uses one shape
with two different index/valid-length draws (a new mask of the same shape does not recompile).
"""

from __future__ import annotations

import pytest
import torch

from skyreels_attention.block_sparse import (
    BlockSparseBackendError,
    block_sparse_attention,
    block_sparse_attention_reference,
    block_sparse_backend_status,
    random_block_index,
)

_FLEX_REASONS = block_sparse_backend_status()["flex"]
pytestmark = pytest.mark.skipif(bool(_FLEX_REASONS), reason=f"flex backend unavailable: {_FLEX_REASONS}")
_CUDA = torch.cuda.is_available()


def _case(batch, heads, lq, lk, head_dim, block_size, *, seed, dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    nqb, nkb = -(-lq // block_size), -(-lk // block_size)
    index, counts = random_block_index(
        batch, heads, nqb, nkb, max_blocks=max(1, nkb - 1), variable_counts=True, generator=gen
    )
    q, k, v = (torch.randn(batch, n, heads, head_dim, generator=gen).to(device, dtype) for n in (lq, lk, lk))
    return q, k, v, index.to(device), counts.to(device)


def _reference(q, k, v, index, counts, block_size, valid):
    return block_sparse_attention_reference(
        q, k, v, index, counts, block_size=block_size, kv_valid_lengths=valid, scale=q.shape[-1] ** -0.5
    )


@pytest.mark.parametrize(
    ("seed", "valid"), [(0, [150, 113]), (1, [7, 150])], ids=["partial-keys", "short-sample"]
)
def test_flex_forward_matches_reference_on_cpu(seed, valid):
    """Lq != Lk, partial last blocks, valid lengths, -1 padding and a head that selects nothing."""
    q, k, v, index, counts = _case(2, 2, 200, 150, 32, 64, seed=seed)
    counts[1, 0] = 0
    valid_t = torch.tensor(valid)
    out = block_sparse_attention(
        q, k, v, index, counts, block_size=64, kv_valid_lengths=valid_t, backend="flex"
    )
    torch.testing.assert_close(out, _reference(q, k, v, index, counts, 64, valid_t), atol=2e-5, rtol=1e-5)
    assert torch.equal(out[1, :, 0], torch.zeros_like(out[1, :, 0]))


@pytest.mark.skipif(_CUDA, reason="checks the CPU refusal")
def test_flex_backward_on_cpu_raises():
    q, k, v, index, counts = _case(2, 2, 200, 150, 32, 64, seed=2)  # the shape compiled above
    q.requires_grad_()
    with pytest.raises(
        BlockSparseBackendError, match="flex: no backward pass on cpu, but an input requires grad"
    ):
        block_sparse_attention(q, k, v, index, counts, block_size=64, backend="flex")
    with torch.no_grad():  # the same call without autograd runs
        out = block_sparse_attention(q, k, v, index, counts, block_size=64, backend="flex")
    torch.testing.assert_close(
        out, _reference(q.detach(), k, v, index, counts, 64, None), atol=2e-5, rtol=1e-5
    )


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_flex_forward_and_backward_on_gpu(dtype):
    # block_size 128: torch's default flex backward tiles on Hopper are 128 wide (see the docs).
    q, k, v, index, counts = _case(2, 3, 1000, 900, 64, 128, seed=0, dtype=dtype, device="cuda")
    valid = torch.tensor([900, 555], device="cuda")
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    grad_out = torch.randn_like(q)
    out = block_sparse_attention(
        q, k, v, index, counts, block_size=128, kv_valid_lengths=valid, backend="flex"
    )
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = _reference(q32, k32, v32, index, counts, 128, valid)
    ref_grads = torch.autograd.grad(ref, (q32, k32, v32), grad_out.float())
    tol = 2e-2 if dtype == torch.bfloat16 else 5e-3
    for got, want in zip((out, *grads), (ref, *ref_grads)):
        torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol)
