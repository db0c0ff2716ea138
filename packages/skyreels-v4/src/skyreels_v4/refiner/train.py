"""Train the refiner with LightningCLI.

``python -m skyreels_v4.refiner.train fit --config recipes/refiner/tiny.yaml``
"""

from __future__ import annotations

from collections.abc import Sequence

from skyreels_v4.refiner.data import RefinerTripleDataModule
from skyreels_v4.refiner.module import RefinerLightningModule
from skyreels_v4.runs import RecipeCLI, run_recipe

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> RecipeCLI:
    """Run the recipe CLI (``skyreels_v4.runs``) on
    :class:`RefinerLightningModule` and :class:`RefinerTripleDataModule`."""
    return run_recipe(RefinerLightningModule, RefinerTripleDataModule, argv)


if __name__ == "__main__":
    main()
