"""Where VSA's time goes: one forward pass under torch.profiler, grouped by what each op does.

    python -m benchmarks.profile_vsa                      # cpp fine stage, L = 16384, 87.5 %
    python -m benchmarks.profile_vsa --backend gather     # the gathering fine stage

Same inputs as benchmarks/test_vsa.py (grid 16x32x32, H = 2, D = 64, fp32, seed 0). Prints the
share of self CPU time in the fine-stage kernel, in copying selected key/value blocks (the
`index_select` calls inside the gather backend), and in VSA's own work (tiling, coarse stage,
top-K, gate, untiling: everything else), then the top ops. The numbers quoted in
docs/benchmarks/vsa.md and docs/decisions/0011 come from this script.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from skyreels_refiner_vsa import cube_tiling, keep_block_count, video_sparse_attention

GRIDS = {4096: (16, 16, 16), 16384: (16, 32, 32), 32768: (32, 32, 32)}
_KERNELS = ("skyreels_block_sparse_cpu::forward", "aten::_scaled_dot_product_flash_attention_for_cpu")


def profile(backend: str, length: int, sparsity: float, rounds: int = 3) -> dict[str, float]:
    """Milliseconds per forward by category: kernel, block copy (gather only), VSA's own work."""
    gen = torch.Generator().manual_seed(0)
    q, k, v, gate = (torch.randn(1, length, 2, 64, generator=gen) for _ in range(4))
    tiling = cube_tiling(GRIDS[length])
    keep = keep_block_count(tiling.num_blocks, sparsity=sparsity)

    def forward() -> torch.Tensor:
        return video_sparse_attention(
            q, k, v, tiling=tiling, keep=keep, gate=gate * 0.1, backend=backend
        ).video

    with torch.no_grad():
        forward()  # build / warm up outside the profile
        with torch.profiler.profile(record_shapes=True) as prof:
            for _ in range(rounds):
                forward()
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events) / rounds / 1e3
    kernel = sum(e.self_cpu_time_total for e in events if e.key in _KERNELS) / rounds / 1e3
    # The gather backend copies the selected blocks with index_select on [B*H*nKB, S, D] block
    # rows (a 3-D input); VSA's own token permutations select rows of a 2-D [B*N, H*D] view.
    copies = sum(
        e.self_cpu_time_total
        for e in events
        if e.key == "aten::index_select" and e.input_shapes and len(e.input_shapes[0]) == 3
    )
    copies = copies / rounds / 1e3
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return {
        "total_ms": total,
        "kernel_ms": kernel,
        "block_copy_ms": copies,
        "vsa_own_ms": total - kernel - copies,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cpp", choices=["cpp", "gather", "torch", "flex"])
    parser.add_argument("--length", type=int, default=16384, choices=sorted(GRIDS))
    parser.add_argument("--sparsity", type=float, default=0.875)
    args = parser.parse_args(argv)
    result = profile(args.backend, args.length, args.sparsity)
    total = result["total_ms"]
    for name, value in result.items():
        share = "" if name == "total_ms" else f"  ({value / total:.0%})"
        print(f"{name:>14}: {value:8.1f} ms{share}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
