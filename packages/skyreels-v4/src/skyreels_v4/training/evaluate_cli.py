"""``skyreels-v4 evaluate``: score a saved model folder on procedural-world clips with chosen sampling.

The quickstart scores its model once, with the sampling settings it was given. This command rescores
any pipeline folder (a quickstart's ``model/``, a trained stage's export) with other steps, guidance
scales, shift or solver, without retraining:

    skyreels-v4 evaluate --model outputs/quickstart/model --out outputs/eval_a6 --audio-guidance 6

It writes, under ``--out``: ``<split>/metrics.{md,json}``, ``<split>/montage.png`` and the first clips
as .mp4 for each split (``seen_pairs``, ``heldout_pairs``), plus ``metrics.json`` (every split, the
sampling used and the model folder) and ``report.md``. With the quickstart's settings (its ``--seed``,
``--num-eval-clips`` as ``--clips``, ``--max-objects``, ``--steps`` and guidance) the numbers equal the
quickstart's report: the clips and the noise come from the same seeds.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["main"]


def _choices(known: Sequence[str], name: str) -> Callable[[str], tuple[str, ...]]:
    """argparse type: comma-separated names from ``known``, each at most once."""

    def parse(text: str) -> tuple[str, ...]:
        values = tuple(part.strip() for part in text.split(",") if part.strip())
        if not values or any(v not in known for v in values) or len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {name} from {', '.join(known)} (each once), got {text!r}"
            )
        return values

    parse.__name__ = name
    return parse


def main(argv: Sequence[str] | None = None) -> int:
    from skyreels_v4.cli import int_at_least, nonnegative_int, positive_int
    from skyreels_v4.errors import FileFormatError
    from skyreels_v4.io import atomic_write_json, atomic_write_text
    from skyreels_v4.model.config_io import to_plain
    from skyreels_v4.pipeline import SkyReelsV4Pipeline
    from skyreels_v4.pipeline.cli import add_sampling_arguments, sampling_from_args
    from skyreels_v4.training.evaluate import (
        EVALUATION_SEED_OFFSET,
        EVALUATION_SPLITS,
        evaluate_splits,
        json_ready,
        splits_report,
        world_for_pipeline,
    )

    parser = argparse.ArgumentParser(
        prog="skyreels-v4 evaluate",
        description="Generate for procedural-world prompts with a saved model folder and score the clips "
        "(object, pitch and sync adherence against the ground truth and chance).",
    )
    parser.add_argument("--model", required=True, help="pipeline folder (e.g. outputs/quickstart/model)")
    parser.add_argument("--out", required=True, help="output folder (metrics, report, montages, clips)")
    parser.add_argument(
        "--clips", type=int_at_least(2), default=24, help="clips per split (default: %(default)s)"
    )
    parser.add_argument(
        "--tasks",
        type=_choices(("t2av", "v2a"), "tasks"),
        default=("t2av", "v2a"),
        help="tasks to generate, comma-separated (default: t2av,v2a)",
    )
    parser.add_argument(
        "--splits",
        type=_choices(tuple(EVALUATION_SPLITS), "splits"),
        default=tuple(EVALUATION_SPLITS),
        help="world splits, comma-separated (default: seen_pairs,heldout_pairs)",
    )
    parser.add_argument(
        "--seed",
        type=nonnegative_int,
        default=0,
        help=f"the run's seed; the clips use seed + {EVALUATION_SEED_OFFSET}, as the quickstart's "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--max-objects", type=positive_int, default=2, help="objects per clip, 1..max (default: 2)"
    )
    parser.add_argument(
        "--frames",
        type=int_at_least(5),
        default=None,
        help="frames per clip at the folder's rate, 1 + k x its video codec's temporal factor (e.g. a "
        "model trained on shorter clips scored at its own length) (default: the folder's "
        "defaults.num_frames)",
    )
    add_sampling_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.max_objects > 8:
        raise ValueError(f"--max-objects: expected an integer in [1, 8], got {args.max_objects}")

    model = Path(args.model)
    try:
        pipe = SkyReelsV4Pipeline.from_pretrained(model)
    except FileFormatError as error:
        raise ValueError(f"--model: {error}") from None
    if args.frames is not None:  # whole latent frames of the folder's own codec (1 + k * its factor)
        try:
            pipe.video_vae.num_latent_frames(args.frames)
        except ValueError as error:
            raise ValueError(f"--frames: {error}") from None
    world = world_for_pipeline(
        pipe, max_objects=args.max_objects, frames=args.frames, name=f"--model {model}"
    )
    sampling = sampling_from_args(pipe.sampling, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = evaluate_splits(
        pipe,
        world=world,
        out_dir=out,
        num_clips=args.clips,
        seed=args.seed + EVALUATION_SEED_OFFSET,
        tasks=args.tasks,
        sampling=sampling,
        splits=args.splits,
        progress=not args.quiet,
    )
    record = to_plain(sampling)
    atomic_write_json(out / "metrics.json", {"model": str(model), "sampling": record, **json_ready(results)})
    settings = ", ".join(f"{k} {record[k]}" for k in ("num_steps", "video_guidance", "audio_guidance"))
    report = (
        f"# Evaluation of `{model}`\n\nSampling: {settings}, shift {record['shift']}, solver "
        f"{record['solver']}; clips of {world.num_frames} frames at {world.fps:g} fps, "
        f"{world.size}x{world.size}, 1-{world.max_objects} objects, seed {args.seed}.\n\n"
        + splits_report(out, results, args.clips)
    )
    atomic_write_text(out / "report.md", report)
    print(report, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
