"""Run the benchmarks and print a readable table of ratios to each group's baseline.

    python -m benchmarks.report                    # every benchmarks/test_*.py
    python -m benchmarks.report -k "dense"         # a subset (pytest -k expression)
    python -m benchmarks.report benchmarks/test_attention_dense.py

Writes results.json, report.md and speedups.png under outputs/benchmarks/<time>/ (atomically).
Convention read here: each benchmark sets `benchmark.group` and `extra_info` with `impl`,
`baseline` (exactly one True per group), `shape`, `dtype`, `device`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def rows_from_json(results: dict) -> list[dict]:
    """One row per benchmark with its speed-up over the group's baseline (baseline time / time)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in results["benchmarks"]:
        groups[bench.get("group") or bench["name"]].append(bench)
    rows = []
    for group, benches in groups.items():
        baselines = [b for b in benches if b["extra_info"].get("baseline")]
        base = baselines[0]["stats"]["median"] if len(baselines) == 1 else None
        for b in benches:
            info = b["extra_info"]
            median = b["stats"]["median"]
            rows.append(
                {
                    "group": group,
                    "impl": info.get("impl", b["name"]),
                    "baseline": bool(info.get("baseline")),
                    "median_ms": median * 1e3,
                    "speedup": (base / median) if base else None,
                    "shape": info.get("shape", ""),
                    "dtype": info.get("dtype", ""),
                    "device": info.get("device", ""),
                }
            )
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| group | impl | median ms | speed-up vs baseline | shape | dtype | device |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for r in rows:
        ratio = "baseline" if r["baseline"] else (f"{r['speedup']:.2f}x" if r["speedup"] else "n/a")
        lines.append(
            f"| {r['group']} | {r['impl']} | {r['median_ms']:.2f} | {ratio} | {r['shape']} | "
            f"{r['dtype']} | {r['device']} |"
        )
    return "\n".join(lines) + "\n"


def plot_speedups(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["speedup"] and not r["baseline"]]
    if not shown:
        return

    def label(row: dict) -> str:
        # Long groups lose their middle, not their end: the end holds what tells groups apart
        # (sparsity, K) once their start (kind, length) is the same.
        group = row["group"]
        if len(group) > 64:
            group = group[:30] + "…" + group[-33:]
        return f"{row['impl']}  ·  {group}"

    fig, ax = plt.subplots(figsize=(12, 0.3 * len(shown) + 1.5))
    speedups = [r["speedup"] for r in shown]
    colors = ["tab:green" if x >= 1 else "tab:red" for x in speedups]
    ax.barh(range(len(shown)), speedups, color=colors)
    for i, x in enumerate(speedups):
        ax.text(x, i, f" {x:.2f}x", va="center", fontsize=7)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(shown)), [label(r) for r in shown], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("speed-up over the group's baseline, same run (> 1: faster than baseline)")
    ax.invert_yaxis()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="*", help="benchmark files (default: all of benchmarks/)")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression to select benchmarks")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    args = parser.parse_args(argv)
    out_dir = args.out or ROOT / "outputs" / "benchmarks" / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / ".raw.json"
    cmd = [sys.executable, "-m", "pytest", *(args.paths or [str(ROOT / "benchmarks")])]
    cmd += ["-q", "-p", "no:randomly", f"--benchmark-json={json_path}", "--benchmark-columns=median,rounds"]
    cmd += ["-o", "addopts=--import-mode=importlib", "--rootdir", str(ROOT)]
    if args.keyword:
        cmd += ["-k", args.keyword]
    print("running:", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=ROOT)
    if not json_path.exists():
        print("no benchmark results were written", file=sys.stderr)
        return code or 1
    results = json.loads(json_path.read_text())
    rows = rows_from_json(results)
    table = markdown_table(rows)
    _atomic_write(out_dir / "results.json", json.dumps(results, indent=1).encode())
    json_path.unlink()
    machine = results.get("machine_info", {})
    header = (
        f"# Benchmark report\n\nmachine: {machine.get('cpu', {}).get('brand_raw', '?')}, "
        f"torch {machine.get('torch', '?')}, threads {machine.get('torch_threads', '?')}, "
        f"cuda: {machine.get('cuda_device')}\n\n"
    )
    _atomic_write(out_dir / "report.md", (header + table).encode())
    plot_speedups(rows, out_dir / "speedups.png")
    print("\n" + header + table)
    print(f"written: {out_dir}/report.md, results.json, speedups.png")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
