"""`skyreels-v4 <command> [args]`: one entry point for the toolkit's commands.

Each command is a module with `main(argv) -> int`, imported only when it is run, so a command
whose optional dependencies are missing does not break the others.
"""

from __future__ import annotations

import importlib
import sys

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
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS))
        print("usage: skyreels-v4 <command> [args]   (`skyreels-v4 <command> --help` for its options)\n")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<{width}}  {text}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        known = ", ".join(COMMANDS)
        print(f"skyreels-v4: unknown command {name!r}; expected one of {known}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    result = module.main(rest)
    # LightningCLI entry points return the CLI object; reaching here means they succeeded.
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
