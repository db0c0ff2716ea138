"""``skyreels-v4 data run PIPELINE.yaml --input DIR --output DIR [--engine local|ray] [--workers N]``
and ``skyreels-v4 data report --output DIR`` (paper 3.4 data pipeline)."""

from __future__ import annotations

import argparse
import sys

from skyreels_v4.errors import SkyReelsError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skyreels-v4 data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a pipeline YAML over a folder of media")
    run.add_argument("pipeline", help="pipeline YAML (recipes/data/*.yaml)")
    run.add_argument("--input", required=True, help="folder of source media")
    run.add_argument("--output", required=True, help="folder for manifest.parquet, exports and reports")
    run.add_argument("--engine", choices=["local", "ray"], default="local")
    run.add_argument("--workers", type=int, default=0, help="processes (0: in this process)")
    run.add_argument(
        "--ray-address", default=None, help="an existing Ray cluster (default: start a local one)"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    report = commands.add_parser("report", help="counts per drop reason and histograms of measured values")
    report.add_argument("--output", required=True, help="the pipeline's output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            from skyreels_v4.data.report import summarize
            from skyreels_v4.data.runner import run_pipeline

            rows = run_pipeline(
                args.pipeline,
                input_dir=args.input,
                output_dir=args.output,
                engine=args.engine,
                workers=args.workers,
                ray_address=args.ray_address,
                progress=not args.quiet,
            )
            summary = summarize(rows)
            print(f"{summary['kept']} of {summary['clips']} clips kept; manifest in {args.output}")
            return 0
        from skyreels_v4.data.report import write_report

        folder = write_report(args.output)
        print(f"report in {folder}")
        return 0
    except (SkyReelsError, ValueError, PermissionError) as error:
        print(f"skyreels-v4 data: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
