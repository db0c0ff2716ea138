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


def test_compiled_flex_raises_instead_of_falling_back_to_eager():
    """Past the recompile limit torch.compile would run flex eagerly (the full [B, H, Lq, Lk]
    scores: out of memory at long lengths); both flex backends must raise instead. Run in a child
    process: a frame that hit the limit stays eager for the rest of a process."""
    import subprocess
    import sys

    code = """
import torch, skyreels_attention.compiled_flex as cf
from skyreels_attention import attention
from skyreels_attention.block_sparse import block_sparse_attention, random_block_index
cf.RECOMPILE_LIMIT = 0  # the next new variant is over the limit
q = torch.randn(1, 23, 2, 16)
index, counts = random_block_index(1, 2, 2, 2, max_blocks=1)
for call in (lambda: attention(q, q, q, backend="flex"),
             lambda: block_sparse_attention(q, q, q, index, counts, block_size=16, backend="flex")):
    try:
        call()
        print("ran")
    except torch._dynamo.exc.FailOnRecompileLimitHit:
        print("raised")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["raised", "raised"], out.stdout + out.stderr[-2000:]


def test_cuda_half_precision_backward_with_small_blocks_is_refused_with_a_reason():
    """torch 2.13 has no flex backward tile config for fp16/bf16 blocks under 128 on recent GPUs."""
    from skyreels_attention.block_sparse.backends import get_block_sparse_backend
    from skyreels_attention.block_sparse.inputs import BlockSparseProblem

    def problem(block_size, dtype, needs_grad):
        n = -(-1024 // block_size)
        return BlockSparseProblem(
            batch=1, heads=2, q_len=1024, kv_len=1024, head_dim=64, block_size=block_size,
            n_q_blocks=n, n_kv_blocks=n, dtype=dtype, device=torch.device("cuda"), needs_grad=needs_grad,
        )  # fmt: skip

    flex = get_block_sparse_backend("flex")
    reasons = flex.extra_reasons(problem(64, torch.bfloat16, True))
    assert reasons and "no CUDA backward for bfloat16 with block_size 64 < 128" in reasons[0]
    assert flex.extra_reasons(problem(128, torch.bfloat16, True)) == []
    assert flex.extra_reasons(problem(64, torch.float32, True)) == []
    assert flex.extra_reasons(problem(64, torch.float16, False)) == []
