"""Train the audio VAE with LightningCLI.

``python -m skyreels_v4.audio_vae.train fit --config recipes/audio_vae/tiny.yaml``

The recipe sets ``ckpt_path: last``: a rerun resumes from the ``last.ckpt`` its ModelCheckpoint
wrote (a fresh start when there is none). The config of each run is saved beside its logs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from lightning.pytorch.cli import LightningCLI

from skyreels_v4.audio_vae.data import AudioFolderDataModule
from skyreels_v4.audio_vae.module import AudioVAELightningModule

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> LightningCLI:
    """Run LightningCLI on :class:`AudioVAELightningModule` and :class:`AudioFolderDataModule`."""
    # With manual optimisation Lightning warns that step-based checkpoints hold the post-step
    # weights; that is exactly what resuming needs, so the multi-line warning is only noise here.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    return LightningCLI(
        AudioVAELightningModule,
        AudioFolderDataModule,
        args=list(argv) if argv is not None else None,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
