"""Dense attention backends over sequence length, against SDPA measured in the same run.

CPU: sdpa (baseline), reference (fp32 math, up to 4k: it materialises L^2 logits) and compiled
flex (forward). On a GPU also flash and xformers when importable, in bf16.
"""

from __future__ import annotations

import pytest
import torch

from skyreels_attention import attention, get_backend

ON_GPU = torch.cuda.is_available()
LENGTHS = [1024, 2048, 4096, 8192, 16384] + ([32768, 65536] if ON_GPU else [])
HEADS, HEAD_DIM = (24, 128) if ON_GPU else (2, 64)
DTYPE = torch.bfloat16 if ON_GPU else torch.float32
BACKENDS = ["sdpa", "reference", "flex"] + (["flash", "xformers"] if ON_GPU else [])


def _cases():
    for length in LENGTHS:
        for name in BACKENDS:
            if name == "reference" and length > (16384 if ON_GPU else 4096):
                continue
            yield pytest.param(name, length, id=f"{name}-L{length}")


@pytest.mark.parametrize(("backend", "length"), list(_cases()))
def test_dense_attention(benchmark, backend, length, bench_device):
    if get_backend(backend).environment_reasons():
        pytest.skip("; ".join(get_backend(backend).environment_reasons()))
    gen = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, length, HEADS, HEAD_DIM, generator=gen).to(bench_device, DTYPE) for _ in range(3)
    )
    attention(q, k, v, backend=backend)  # compile / warm up outside the timing

    def run():
        out = attention(q, k, v, backend=backend)
        if ON_GPU:
            torch.cuda.synchronize()
        return out

    benchmark.group = f"dense attention L={length} H={HEADS} D={HEAD_DIM}"
    benchmark.extra_info.update(
        impl=backend,
        baseline=backend == "sdpa",
        shape=f"[1, {length}, {HEADS}, {HEAD_DIM}]",
        dtype=str(DTYPE).removeprefix("torch."),
        device=torch.cuda.get_device_name() if ON_GPU else "cpu",
    )
    rounds = 3 if length >= 8192 else 5
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
