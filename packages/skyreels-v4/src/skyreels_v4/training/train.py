"""``skyreels-v4 train``: every stage of the paper's training schedule (section 4, Table 1) as a recipe.

Commands (``recipes/train/README.md`` lists the recipes and their order)::

    skyreels-v4 train fit --config recipes/train/<stage>.yaml        # one stage (LightningCLI)
    skyreels-v4 train lora fit --config recipes/train/lora_tiny.yaml # LoRA fine-tuning
    skyreels-v4 train merge-branches --video V --audio A --out DIR   # the joint stage's start
    skyreels-v4 train tiny-cache --out outputs/train/tiny/cache      # the tiny recipes' caches

``fit`` runs :func:`skyreels_v4.runs.run_recipe` (exact resume with ``ckpt_path: last``, run identity,
pre-flight checks, non-finite guards) on :class:`StageTrainingModule` and :class:`StageDataModule`.
A stage starts from the previous stage's exported model folder through ``model.init_from``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]

_USAGE = (
    "skyreels-v4 train {fit,validate} --config recipes/train/<stage>.yaml | "
    "lora fit --config recipes/train/lora_tiny.yaml | "
    "merge-branches --video DIR --audio DIR --out DIR | tiny-cache --out DIR"
)


def _merge(argv: Sequence[str]) -> int:
    from skyreels_v4.training.stages import merge_branches

    parser = argparse.ArgumentParser(
        prog="skyreels-v4 train merge-branches",
        description="Joint-stage start: video branch + exchanges of one folder, audio branch of another.",
    )
    parser.add_argument("--video", required=True, help="model folder of the last video-pretrain stage")
    parser.add_argument("--audio", required=True, help="model folder of the audio-pretrain stage")
    parser.add_argument("--out", required=True, help="the merged model folder to write")
    args = parser.parse_args(list(argv))
    out = merge_branches(args.video, args.audio, args.out)
    print(f"wrote {out}")
    return 0


def _tiny_cache(argv: Sequence[str]) -> int:
    from skyreels_v4.cli import nonnegative_int
    from skyreels_v4.training.stages import build_tiny_caches

    parser = argparse.ArgumentParser(
        prog="skyreels-v4 train tiny-cache", description="The procedural-world caches of the tiny recipes."
    )
    parser.add_argument("--out", default="outputs/train/tiny/cache", help="folder (default: %(default)s)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="world seed (default: %(default)s)")
    args = parser.parse_args(list(argv))
    folders = build_tiny_caches(args.out, seed=args.seed)
    print("\n".join(f"{name}: {folder}" for name, folder in folders.items()))
    return 0


def main(argv: Sequence[str] | None = None) -> Any:
    """Dispatch (module docstring); ``fit``/``validate`` return the RecipeCLI, the others 0."""
    import sys

    from skyreels_v4.runs import run_recipe
    from skyreels_v4.training.stages import StageDataModule, StageTrainingModule

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "merge-branches":
        return _merge(args[1:])
    if args and args[0] == "tiny-cache":
        return _tiny_cache(args[1:])
    if args and args[0] == "lora":
        from skyreels_v4.training.lora import LoRATrainingModule

        return run_recipe(LoRATrainingModule, StageDataModule, args[1:])
    if args and args[0] in ("-h", "--help"):
        print(f"usage: {_USAGE}")
        return 0
    return run_recipe(StageTrainingModule, StageDataModule, args)


if __name__ == "__main__":
    main()
