"""Train the refiner with LightningCLI.

``python -m skyreels_v4.refiner.train fit --config recipes/refiner/tiny.yaml``
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.cli import LightningCLI

from skyreels_v4.refiner.data import RefinerTripleDataModule
from skyreels_v4.refiner.module import RefinerLightningModule

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> LightningCLI:
    """Run LightningCLI on :class:`RefinerLightningModule` and :class:`RefinerTripleDataModule`."""
    return LightningCLI(
        RefinerLightningModule,
        RefinerTripleDataModule,
        args=list(argv) if argv is not None else None,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
