"""Every GPU benchmark in one unattended run (issue 15), rows written into docs/benchmarks.md.

    python -m benchmarks.gpu_suite                 # full suite, a few minutes on one H100/H200
    python -m benchmarks.gpu_suite --quick         # L = 16k only, fewer rounds (about a minute)
    python -m benchmarks.gpu_suite --no-write      # print the table, leave docs/benchmarks.md alone
    bash scripts/gpu_benchmarks.sh                 # the same, from a fresh checkout

Groups (bf16, CUDA events, median of the timed rounds after warm-up, every ratio against a
baseline timed in the same run on the same device):

1. attention, L = 16k / 32k / 64k, H = 24, D = 128 (the full preset's heads): dense SDPA (baseline),
   flash (skyreels-attention's flash backend, when flash-attn is installed), our Triton block-sparse
   kernel and flex block-sparse at 75 / 87.5 / 90 % sparsity, VSA (tiling + coarse stage + top-K +
   fine stage + gate) with the triton and flex fine stages at 87.5 %;
2. the joint block pair of the ``small`` preset (dual-stream video + audio block + eq. 5) forward +
   backward on 480p-sized token counts, eager (baseline) vs ``torch.compile``;
3. one sampling step (one transformer forward, CFG batch of 2) of the ``small`` preset at
   848x480, 81 frames;
4. SP=1 vs SP=N for the step of group 3 when several GPUs are visible (``torchrun``-free: one
   process per GPU spawned here).

Without CUDA it prints why and exits with status 0 without touching any file (the CPU numbers come
from ``scripts/benchmarks.sh``). A case that fails records its error in its row; the run goes on.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BEGIN, END = "<!-- gpu-suite:begin -->", "<!-- gpu-suite:end -->"
NO_CUDA = (
    "gpu_suite: no CUDA device visible (torch.cuda.is_available() is False, torch {version}); nothing "
    "measured and docs/benchmarks.md left unchanged. Run it on a GPU machine: bash scripts/gpu_benchmarks.sh"
)


@dataclass
class Row:
    group: str
    case: str
    ms: float | None
    baseline: str | None = None  # case name of the baseline within the group (None: this is one)
    note: str = ""


def _time(fn: Callable[[], object], *, warmup: int, rounds: int) -> float:
    """Median milliseconds of ``fn`` over ``rounds`` after ``warmup`` calls (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def _measure(rows: list[Row], group: str, case: str, fn: Callable[[], Callable[[], object]], *,
             baseline: str | None, warmup: int, rounds: int) -> None:  # fmt: skip
    """Build the case (``fn`` returns the callable to time), time it, record a row (or the error)."""
    try:
        run = fn()
        ms = _time(run, warmup=warmup, rounds=rounds)
        rows.append(Row(group, case, ms, baseline))
    except Exception as error:  # one failing case must not stop an unattended run
        message = f"{type(error).__name__}: {error}".splitlines()[0][:160]
        rows.append(Row(group, case, None, baseline, f"failed: {message}"))
    finally:
        torch.cuda.empty_cache()


# -- 1. attention kernels ----------------------------------------------------------------------------
def attention_group(rows: list[Row], lengths: Sequence[int], warmup: int, rounds: int) -> None:
    from skyreels_attention import attention
    from skyreels_attention.block_sparse import block_sparse_attention, blocks_to_keep, random_block_index
    from skyreels_attention.status import backend_report

    heads, dim, block = 24, 128, 64
    flash_ok = bool(backend_report().get("flash", {}).get("available"))
    for length in lengths:
        group = f"attention L={length} H={heads} D={dim} bf16"
        gen = torch.Generator().manual_seed(0)
        q, k, v = (_randn(gen, 1, length, heads, dim) for _ in range(3))
        qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
        sdpa = torch.nn.functional.scaled_dot_product_attention
        timing = {"warmup": warmup, "rounds": rounds}
        with torch.no_grad():
            _measure(rows, group, "sdpa (dense)", partial(partial, sdpa, qh, kh, vh), baseline=None, **timing)
            if flash_ok:
                run = partial(partial, attention, q, k, v, backend="flash")
                _measure(rows, group, "flash (dense)", run, baseline="sdpa (dense)", **timing)
            n = -(-length // block)
            for sparsity in (0.75, 0.875, 0.9):
                index, counts = random_block_index(
                    1, heads, n, n, max_blocks=blocks_to_keep(sparsity, n), generator=gen
                )
                index, counts = index.cuda(), counts.cuda()
                for backend in ("triton", "flex"):
                    run = partial(
                        partial,
                        block_sparse_attention,
                        q,
                        k,
                        v,
                        index,
                        counts,
                        block_size=block,
                        backend=backend,
                    )
                    name = f"block-sparse {backend} {sparsity:.1%}"
                    _measure(rows, group, name, run, baseline="sdpa (dense)", **timing)
            vsa_rows(rows, group, q, k, v, warmup, rounds)


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen).to("cuda", torch.bfloat16)


_GRIDS = {16384: (16, 32, 32), 32768: (32, 32, 32), 65536: (32, 32, 64)}


def vsa_rows(rows: list[Row], group: str, q, k, v, warmup: int, rounds: int) -> None:
    from skyreels_refiner_vsa import cube_tiling, keep_block_count, video_sparse_attention

    grid = _GRIDS.get(q.shape[1])
    if grid is None:
        return
    tiling = cube_tiling(grid)
    keep = keep_block_count(tiling.num_blocks, sparsity=0.875)
    gate = torch.zeros_like(q)
    for backend in ("triton", "flex"):

        def case(backend=backend):
            return lambda: video_sparse_attention(
                q, k, v, tiling=tiling, keep=keep, gate=gate, backend=backend
            )

        _measure(rows, group, f"VSA {backend} 87.5% (grid {'x'.join(map(str, grid))})", case,
                 baseline="sdpa (dense)", warmup=warmup, rounds=rounds)  # fmt: skip


# -- 2. joint block pair forward + backward ------------------------------------------------------------
def _small_model():
    from skyreels_mmdit_blocks import JointAudioVideoTransformer, joint_preset

    torch.manual_seed(0)
    return JointAudioVideoTransformer(joint_preset("small")).to("cuda", torch.bfloat16)


def _small_inputs(model, batch: int, frames: int = 21, height: int = 60, width: int = 106):
    """848x480, 81 frames -> latents (21, 60, 106) -> 21·30·53 = 33,390 video tokens; 218 audio."""
    cfg = model.config
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to("cuda", torch.bfloat16)

    return {
        "video_latents": randn(batch, cfg.video.in_channels, frames, height, width),
        "audio_latents": randn(batch, cfg.audio.in_channels, 218),
        "timestep": torch.full((batch,), 500.0, device="cuda", dtype=torch.bfloat16),
        "text_tokens": randn(batch, 256, cfg.video.text_dim),
    }


def _block_pair(model, compiled: bool) -> Callable[[], None]:
    """Video block 0 + audio block 0 + exchange 0 of ``model``, forward + backward, 480p token counts."""
    from skyreels_mmdit_blocks.block_context import BlockContext

    units = (model.video.blocks[0], model.audio.blocks[0], model.exchanges[0])
    video_block, audio_block, exchange = (torch.compile(m) for m in units) if compiled else units
    d = model.config.video.dim
    gen = torch.Generator().manual_seed(0)
    v = _randn(gen, 1, 21 * 30 * 53, d).requires_grad_()
    a = _randn(gen, 1, 218, d).requires_grad_()
    t, cond = _randn(gen, 1, 256, d), _randn(gen, 1, d)
    ctx = BlockContext(conditioning=cond, rotary=None, joint_mask=None, text_context=t, text_mask=None)

    def run() -> None:
        v1, _ = video_block(v, t, ctx)
        a1, _ = audio_block(a, t, ctx)
        v2, a2 = exchange(v1, a1, video_rotary=None, audio_rotary=None)
        (v2.float().square().mean() + a2.float().square().mean()).backward()

    return run


def block_group(rows: list[Row], warmup: int, rounds: int) -> None:
    model = _small_model()
    group = "joint block pair (small: video block 0 + audio block 0 + eq. 5), fwd+bwd, 480p tokens, bf16"
    timing = {"warmup": warmup, "rounds": rounds}
    _measure(rows, group, "eager", partial(_block_pair, model, False), baseline=None, **timing)
    _measure(rows, group, "torch.compile", partial(_block_pair, model, True), baseline="eager", **timing)


# -- 3. one sampling step of `small` ---------------------------------------------------------------------
def step_group(rows: list[Row], warmup: int, rounds: int) -> None:
    model = _small_model().eval()
    inputs = _small_inputs(model, batch=2)  # conditional + unconditional branch in one batch
    group = "sampling step of small (one forward, CFG batch 2), 848x480 81 frames, bf16"
    with torch.no_grad():
        run = partial(partial, model, **inputs)
        _measure(rows, group, "1 GPU", run, baseline=None, warmup=warmup, rounds=rounds)


# -- 4. SP = 1 vs N --------------------------------------------------------------------------------------
def _sp_worker(rank: int, world: int, port: int, warmup: int, rounds: int, out: str) -> None:
    import torch.distributed as dist

    from skyreels_v4.scale.sequence_parallel import apply_sequence_parallel

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    try:
        model = apply_sequence_parallel(_small_model().eval(), dist.group.WORLD)
        inputs = _small_inputs(model, batch=2)
        with torch.no_grad():
            ms = _time(lambda: model(**inputs), warmup=warmup, rounds=rounds)
        if rank == 0:
            Path(out).write_text(f"{ms}\n")
    finally:
        dist.destroy_process_group()


def sp_group(rows: list[Row], warmup: int, rounds: int) -> None:
    import socket
    import tempfile

    import torch.multiprocessing as mp

    gpus = torch.cuda.device_count()
    group = "sampling step of small (one forward, CFG batch 2), 848x480 81 frames, bf16"
    if gpus < 2:
        rows.append(Row(group, "SP=N", None, "1 GPU", f"skipped: {gpus} GPU visible"))
        return
    heads = 12  # the small preset's video heads: SP must divide them
    world = max(n for n in range(2, gpus + 1) if heads % n == 0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "ms")
        try:
            mp.spawn(_sp_worker, args=(world, port, warmup, rounds, out), nprocs=world, join=True)
            rows.append(Row(group, f"SP={world} ({world} GPUs)", float(Path(out).read_text()), "1 GPU"))
        except Exception as error:
            rows.append(
                Row(group, f"SP={world}", None, "1 GPU", f"failed: {type(error).__name__}: {error}"[:200])
            )


# -- report ----------------------------------------------------------------------------------------------
def table(rows: list[Row], device: str) -> str:
    base = {(r.group, r.case): r.ms for r in rows}
    lines = [
        f"Device: **{device}**, torch {torch.__version__}, CUDA {torch.version.cuda}; "
        f"`python -m benchmarks.gpu_suite`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| group | case | ms | speed-up vs baseline (same run) | note |",
        "|---|---|---:|---:|---|",
    ]
    for r in rows:
        ms = "" if r.ms is None else f"{r.ms:.3f}"
        ref = base.get((r.group, r.baseline)) if r.baseline else None
        ratio = "baseline" if r.baseline is None else (
            f"{ref / r.ms:.2f}x vs {r.baseline}" if ref and r.ms else ""
        )  # fmt: skip
        lines.append(f"| {r.group} | {r.case} | {ms} | {ratio} | {r.note} |")
    return "\n".join(lines)


def write_section(text: str, doc: Path = DOC) -> None:
    """Replace the marked section of ``doc`` (append it under a '## GPU suite' heading the first time)."""
    content = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in content and END in content:
        content = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, content, flags=re.S)
    else:
        content = content.rstrip("\n") + "\n\n## GPU suite (benchmarks/gpu_suite.py)\n\n" + block + "\n"
    tmp = doc.with_name(doc.name + ".tmp")
    tmp.write_text(content)
    os.replace(tmp, doc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="L = 16k only, 1 warm-up + 3 rounds")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    parser.add_argument("--only", choices=["attention", "block", "step", "sp"], action="append",
                        help="run only these groups (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_CUDA.format(version=torch.__version__), file=sys.stderr)
        return 0
    device = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    warmup, rounds = (1, 3) if args.quick else (2, 5)
    lengths = [16384] if args.quick else [16384, 32768, 65536]
    groups = set(args.only or ["attention", "block", "step", "sp"])
    rows: list[Row] = []
    started = time.perf_counter()
    if "attention" in groups:
        attention_group(rows, lengths, warmup, rounds)
    if "block" in groups:
        block_group(rows, warmup, rounds)
    if "step" in groups or "sp" in groups:
        step_group(rows, warmup, rounds)
    if "sp" in groups:
        sp_group(rows, warmup, rounds)
    text = table(rows, device)
    print(text)
    print(f"\n{len(rows)} rows in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if not args.no_write:
        write_section(text)
        print(f"wrote the GPU section of {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
