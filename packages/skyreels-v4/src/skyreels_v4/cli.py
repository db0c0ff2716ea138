"""`skyreels-v4 [--debug] <command> [args]`: one entry point for the toolkit's commands.

Each command is a module with `main(argv) -> int`, imported only when it is run, so a command
whose optional dependencies are missing does not break the others.

User errors (a bad argument, a bad file, data that does not match the model: ``ValueError``,
``TypeError``, ``OSError`` and the toolkit's typed errors) print ONE line,
``skyreels-v4 <command>: error: <what>``, and exit with status 2; ``--debug`` (before the
command) shows the traceback instead. argparse errors are turned into the same one line.
The argument types below (``positive_int``, ``size_pair`` ...) validate numbers where they are parsed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import sys
from collections.abc import Callable, Iterator

__all__ = [
    "COMMANDS",
    "CommandLineError",
    "finite_float",
    "int_at_least",
    "main",
    "nonnegative_int",
    "positive_float",
    "positive_int",
    "size_pair",
]

# name -> (module with main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "backends": ("skyreels_attention.__main__", "which attention backends work here, and why not"),
    "world-gallery": ("skyreels_v4.world.gallery", "render procedural clips to mp4 + wav and a montage"),
    "metrics-validate": (
        "skyreels_v4.metrics.validation",
        "check the A/V metrics on ground truth and shifts",
    ),
    "audio-vae-data": (
        "skyreels_v4.audio_vae.make_dataset",
        "make the espeak + tones evaluation/training set",
    ),
    "audio-vae-train": (
        "skyreels_v4.audio_vae.train",
        "train the audio VAE (LightningCLI: fit --config ...)",
    ),
    "audio-vae-eval": ("skyreels_v4.audio_vae.evaluate", "SI-SNR / mel / STFT distances on held-out clips"),
    "refiner-train": ("skyreels_v4.refiner.train", "train the refiner (LightningCLI: fit --config ...)"),
    "refiner-efficiency": (
        "skyreels_refiner_vsa.efficiency",
        "FLOPs: base + refiner vs direct 1080p generation",
    ),
    "quickstart": (
        "skyreels_v4.training.quickstart",
        "train the tiny model on the procedural world, then generate clips with sound",
    ),
    "generate": (
        "skyreels_v4.pipeline.cli",
        "prompt (+ image/video/audio files) to an mp4 with sound; --help: tasks",
    ),
    "convert": ("skyreels_v4.model.convert", "build a pipeline folder from a HunyuanVideo checkpoint"),
    "plan": ("skyreels_v4.scale.plan_cli", "memory and FLOPs per device for a preset, clip and GPU layout"),
    "data": ("skyreels_v4.data.cli", "data pipeline: run PIPELINE.yaml --input DIR --output DIR | report"),
    "train": (
        "skyreels_v4.training.train",
        "train a Table 1 stage (fit --config recipes/train/<stage>.yaml), lora, merge-branches",
    ),
    "cache": ("skyreels_v4.training.cache_cli", "precompute video/audio latents and text embeddings"),
    "probe": (
        "skyreels_v4.training.probe",
        "a trained model's clean-estimate error at each noise level on held-out world clips",
    ),
    "evaluate": (
        "skyreels_v4.training.evaluate_cli",
        "score a model folder on world prompts (other steps / guidance: no retraining)",
    ),
    "vae-train-video": (
        "skyreels_v4.vae.train_video",
        "train the tiny video autoencoder, report held-out PSNR",
    ),
}


class CommandLineError(ValueError):
    """A command-line argument was rejected by the parser (the message names it)."""


def int_at_least(low: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value

    parse.__name__ = f"int_at_least_{low}"
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def size_pair(text: str) -> tuple[int, int]:
    """argparse type: ``WIDTHxHEIGHT`` with positive integers."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT with positive integers (e.g. 848x480), got {text!r}"
        )
    return int(parts[0]), int(parts[1])


@contextlib.contextmanager
def _argparse_errors_raise() -> Iterator[None]:
    """Inside the block, ``ArgumentParser.error`` raises CommandLineError instead of printing usage."""
    original = argparse.ArgumentParser.error

    def error(self: argparse.ArgumentParser, message: str) -> None:
        raise CommandLineError(message)

    argparse.ArgumentParser.error = error  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[method-assign]


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return text


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ValueError, TypeError, OSError, argparse.ArgumentError]
    with contextlib.suppress(ImportError):
        from jsonargparse import ArgumentError

        errors.append(ArgumentError)
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = False
    while argv and argv[0] == "--debug":
        debug, argv = True, argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS))
        print(
            "usage: skyreels-v4 [--debug] <command> [args]"
            "   (`skyreels-v4 <command> --help` for its options)\n"
        )
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<{width}}  {text}")
        print("\n  --debug: show tracebacks instead of one-line errors")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        known = ", ".join(COMMANDS)
        print(f"skyreels-v4: error: unknown command {name!r}; expected one of {known}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    saved_argv = sys.argv
    sys.argv = [f"skyreels-v4 {name}"]  # the program name that argparse and LightningCLI report
    try:
        with _argparse_errors_raise():
            result = module.main(rest)
    except _user_errors() as error:
        if debug:
            raise
        print(f"skyreels-v4 {name}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved_argv
    # LightningCLI entry points return the CLI object; reaching here means they succeeded.
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
