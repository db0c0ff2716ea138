"""``skyreels-v4 plan``: the memory/FLOP planner of issue 15 on the command line (markdown or JSON).

    skyreels-v4 plan --preset full --resolution 1080p --fps 32 --seconds 15 --gpus 8 --gpu-memory 80GB
    skyreels-v4 plan ... --layout 1x4x2 --layout 1x1x8 --json

User errors print one line to stderr and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence

from skyreels_v4.scale.plan import Plan, parse_layout, plan

__all__ = ["main", "markdown"]

_GIB = 1024**3


def _gib(value: int) -> str:
    return f"{value / _GIB:,.1f}" if value >= _GIB // 10 else f"{value / _GIB:.2g}"


def _flops(value: float) -> str:
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if value >= scale:
            return f"{value / scale:,.2f} {unit}"
    return f"{value / 1e6:,.2f} MFLOP"


def markdown(p: Plan) -> str:
    """The plan as markdown: a summary, FLOPs, and one memory row per layout."""
    t = p.tokens
    lines = [
        f"**Plan:** preset `{p.preset}` ({p.parameters:,} parameters), {p.width}x{p.height}, "
        f"{p.fps:g} fps, {p.seconds:g} s ({t.pixel_frames} frames -> latents {t.video_latent}), "
        f"{t.video_tokens:,} video + {t.audio_tokens:,} audio + {p.text_tokens} text tokens per sample; "
        f"{p.gpus} GPUs x {p.gpu_memory / _GIB:,.0f} GiB; micro-batch {p.batch}.",
        "",
        "| FLOPs | count |",
        "|---|---:|",
        f"| forward, one sample (attention / rest) | {_flops(p.training_forward.total)} "
        f"({_flops(p.training_forward.attention)} / {_flops(p.training_forward.other)}) |",
        f"| training step (forward + backward) | {_flops(p.training_step_flops)} |",
        f"| training step, activation checkpointing | {_flops(p.training_step_flops_checkpointed)} |",
        f"| generation, direct ({p.steps} steps x {p.guidance_passes} passes) | "
        f"{_flops(p.generation_direct_flops)} |",
        f"| generation, efficient path ({p.efficient_path}) | {_flops(p.generation_efficient_flops)} |",
        "",
        "Training memory per device, GiB (layout = dp_replicate x dp_shard x sp; parameter state = fp32 "
        "weights + gradients + AdamW, sharded over dp_shard x sp):",
        "",
        "| layout | video tokens / device | parameter state | gathered weights | activations | total | fits "
        "| activations (AC) | total (AC) | fits (AC) |",
        "|---|---:|---:|---:|---:|---:|:-:|---:|---:|:-:|",
    ]
    for row in p.layouts:
        lines.append(
            f"| {row.layout} | {row.video_tokens_per_device:,} | {_gib(row.parameter_state)} | "
            f"{_gib(row.gathered_weights)} | {_gib(row.activations.peak)} | {_gib(row.total)} | "
            f"{'yes' if row.fits else 'no'} | {_gib(row.activations_checkpointed.peak)} | "
            f"{_gib(row.total_checkpointed)} | {'yes' if row.fits_checkpointed else 'no'} |"
        )
    lines.append(
        f"\nBudget per device: {_gib(p.layouts[0].budget)} GiB after the reserve." if p.layouts else ""
    )
    return "\n".join(lines)


def _as_json(p: Plan) -> dict:
    data = dataclasses.asdict(p)
    for row, out in zip(p.layouts, data["layouts"], strict=True):
        out["layout"] = str(row.layout)
        out.update(
            total=row.total,
            total_checkpointed=row.total_checkpointed,
            fits=row.fits,
            fits_checkpointed=row.fits_checkpointed,
        )
    return data


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skyreels-v4 plan", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="full", help="tiny, small or full")
    parser.add_argument("--resolution", default="1080p", help="360p/480p/540p/720p/1080p or WIDTHxHEIGHT")
    parser.add_argument("--fps", type=float, default=32.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--gpu-memory", default="80GB", help="per device, e.g. 80GB, 141GiB")
    parser.add_argument(
        "--layout", action="append", default=None, help="DP_REPLICATExDP_SHARDxSP (repeatable); default all"
    )
    parser.add_argument("--batch", type=int, default=1, help="samples per data-parallel rank")
    parser.add_argument("--text-tokens", type=int, default=256)
    parser.add_argument("--ema", action="store_true", help="count an fp32 EMA copy (sharded)")
    parser.add_argument("--reserve", type=float, default=0.1, help="fraction of memory kept free")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--refiner-steps", type=int, default=50)
    parser.add_argument("--guidance-passes", type=int, default=2)
    parser.add_argument("--low-resolution", default="480p")
    parser.add_argument("--low-fps", type=float, default=16.0)
    parser.add_argument("--keyframes", type=int, default=8)
    parser.add_argument("--sparsity", type=float, default=0.875)
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        layouts = None if args.layout is None else [parse_layout(v) for v in args.layout]
        result = plan(
            args.preset,
            args.resolution,
            args.fps,
            args.seconds,
            args.gpus,
            args.gpu_memory,
            layouts,
            batch=args.batch,
            text_tokens=args.text_tokens,
            ema=args.ema,
            reserve=args.reserve,
            steps=args.steps,
            refiner_steps=args.refiner_steps,
            guidance_passes=args.guidance_passes,
            low_resolution=args.low_resolution,
            low_fps=args.low_fps,
            keyframes=args.keyframes,
            sparsity=args.sparsity,
        )
    except (TypeError, ValueError) as error:
        print(f"skyreels-v4 plan: {error}", file=sys.stderr)
        return 2
    print(json.dumps(_as_json(result), indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
