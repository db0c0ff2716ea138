"""Peak host memory of ``SkyReelsV4Transformer.from_pretrained`` relative to the weights' size.

    python benchmarks/memory_from_pretrained.py                     # `small` preset, bf16 (~1 GB folder)
    python benchmarks/memory_from_pretrained.py --dim 256 --dtype float32
    python benchmarks/memory_from_pretrained.py --load FOLDER       # measure one saved folder (JSON out)

The load runs in a fresh subprocess. After its imports it resets the peak counter (``5`` into
``/proc/self/clear_refs``, Linux >= 4.0), notes ``VmRSS``, loads, and reads ``VmHWM``: the reported
peak is ``VmHWM - VmRSS before``, i.e. what loading added at its highest point. Weights size =
bytes of tensor data in the folder. The goal (issue 12) is a ratio of at most 1.2: the model is built
on the meta device and the tensors of one shard at a time are assigned to it (no second copy).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_DTYPES = ("float32", "bfloat16", "float16")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _load_and_report(folder: Path) -> dict:
    """Child side: load ``folder`` and return the memory figures (run in a fresh process)."""
    import torch

    from skyreels_v4.model import SkyReelsV4Transformer, weight_files
    from skyreels_v4.model.weights import INDEX_NAME

    torch.set_num_threads(1)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current VmRSS
    before = _status_kb("VmRSS")
    start = time.perf_counter()
    model = SkyReelsV4Transformer.from_pretrained(folder)
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM")
    params = sum(p.numel() for p in model.parameters())
    loaded = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    files = weight_files(folder)
    return {
        "folder": str(folder),
        "parameters": params,
        "weights_bytes": loaded,
        "num_shards": len(files),
        "sharded": (Path(folder) / INDEX_NAME).exists(),
        "rss_before_kb": before,
        "peak_kb": peak,
        "added_peak_bytes": (peak - before) * 1024,
        "ratio": (peak - before) * 1024 / loaded,
        "seconds": seconds,
    }


def measure(folder: str | Path) -> dict:
    """Load ``folder`` in a fresh Python process and return its memory figures (see the module doc)."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--load", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"measuring {folder} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_folder(folder: Path, *, preset: str, dim: int | None, dtype: str, max_shard_size: str) -> Path:
    """Save a randomly initialised preset (optionally narrowed to ``dim``) in ``dtype``."""
    from dataclasses import replace

    import torch

    from skyreels_v4.model import SkyReelsV4Transformer, transformer_preset

    config = transformer_preset(preset)
    if dim is not None:
        heads = max(1, dim // 64)
        axes = (dim // heads - 2 * (dim // heads * 7 // 16), dim // heads * 7 // 16, dim // heads * 7 // 16)
        rope = replace(config.video.rope, axes_dims=axes)
        video = replace(config.video, dim=dim, num_heads=heads, rope=rope)
        from skyreels_av_rope import audio_rotary_config

        audio = replace(
            config.audio, dim=dim, num_heads=heads, rope=audio_rotary_config(config.audio_alignment, rope)
        )
        config = replace(config, video=video, audio=audio)
    model = SkyReelsV4Transformer(config).to(getattr(torch, dtype))
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--load", type=Path, help="(child mode) load this folder and print JSON")
    parser.add_argument("--preset", default="small", choices=("tiny", "small", "full"))
    parser.add_argument("--dim", type=int, help="narrow the preset to this width (heads of 64)")
    parser.add_argument("--dtype", default="bfloat16", choices=_DTYPES)
    parser.add_argument("--max-shard-size", default="5GB")
    args = parser.parse_args(argv)
    if args.load is not None:
        print(json.dumps(_load_and_report(args.load)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(
            Path(tmp) / "transformer",
            preset=args.preset,
            dim=args.dim,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
        )
        result = measure(folder)
    result.update(preset=args.preset, dim=args.dim, dtype=args.dtype, max_shard_size=args.max_shard_size)
    print(json.dumps(result, indent=1))
    print(
        f"\n{args.preset} (dim {args.dim or 'preset'}, {args.dtype}): "
        f"{result['parameters'] / 1e6:.1f}M parameters, weights {result['weights_bytes'] / 2**20:.1f} MiB "
        f"in {result['num_shards']} file(s); from_pretrained "
        f"added peak {result['added_peak_bytes'] / 2**20:.1f} MiB = {result['ratio']:.3f}x the weights "
        f"(goal <= 1.2x), {result['seconds']:.2f} s"
    )
    return 0 if result["ratio"] <= 1.2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
