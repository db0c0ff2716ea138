"""Block-sparse attention (forward) against dense SDPA measured in the same run.

Random block indices with a fixed seed; at sparsity s every query block keeps
K = ceil((1 - s) * n_kv_blocks) distinct key blocks (VSA's top-K rule), block size 64.
CPU: torch reference, gather (gathered blocks + fused SDPA), our C++ kernel (cpp) and compiled
flex at 75 / 87.5 / 90 % sparsity, L = 4096 and 8192, fp32.
GPU (when CUDA is available): our Triton kernel and flex in bf16 at 87.5 %, L = 16k..64k.
"""

from __future__ import annotations

import pytest
import torch

from skyreels_attention.block_sparse import (
    block_sparse_attention,
    block_sparse_backend_status,
    blocks_to_keep,
    random_block_index,
)

ON_GPU = torch.cuda.is_available()
BLOCK_SIZE = 64
if ON_GPU:
    LENGTHS, SPARSITIES, HEADS, HEAD_DIM, DTYPE = [16384, 32768, 65536], [0.875], 24, 128, torch.bfloat16
    BACKENDS = ["triton", "flex"]
else:
    LENGTHS, SPARSITIES, HEADS, HEAD_DIM, DTYPE = [4096, 8192], [0.75, 0.875, 0.9], 2, 64, torch.float32
    BACKENDS = ["torch", "gather", "cpp", "flex"]


def _cases():
    for length in LENGTHS:
        yield pytest.param("sdpa", length, 0.0, id=f"sdpa-L{length}")
        for sparsity in SPARSITIES:
            for name in BACKENDS:
                yield pytest.param(name, length, sparsity, id=f"{name}-L{length}-s{sparsity}")


def _sync():
    if ON_GPU:
        torch.cuda.synchronize()


@pytest.mark.parametrize(("impl", "length", "sparsity"), list(_cases()))
def test_block_sparse_attention(benchmark, impl, length, sparsity, bench_device):
    if impl != "sdpa" and block_sparse_backend_status()[impl]:
        pytest.skip("; ".join(block_sparse_backend_status()[impl]))
    gen = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, length, HEADS, HEAD_DIM, generator=gen).to(bench_device, DTYPE) for _ in range(3)
    )
    if impl == "sdpa":
        qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))

        def run():
            out = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh)
            _sync()
            return out

    else:
        n_blocks = -(-length // BLOCK_SIZE)
        index, counts = random_block_index(
            1, HEADS, n_blocks, n_blocks, max_blocks=blocks_to_keep(sparsity, n_blocks), generator=gen
        )
        index, counts = index.to(bench_device), counts.to(bench_device)

        def run():
            out = block_sparse_attention(q, k, v, index, counts, block_size=BLOCK_SIZE, backend=impl)
            _sync()
            return out

    with torch.no_grad():
        run()  # compile / autotune / warm up outside the timing
        benchmark.group = f"block-sparse attention L={length} H={HEADS} D={HEAD_DIM} block={BLOCK_SIZE}"
        benchmark.extra_info.update(
            impl="sdpa (dense)" if impl == "sdpa" else f"{impl} {sparsity:.1%} sparse",
            baseline=impl == "sdpa",
            shape=f"[1, {length}, {HEADS}, {HEAD_DIM}]",
            dtype=str(DTYPE).removeprefix("torch."),
            device=torch.cuda.get_device_name() if ON_GPU else "cpu",
        )
        benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
