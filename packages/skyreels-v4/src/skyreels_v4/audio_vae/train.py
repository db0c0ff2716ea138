"""Train the audio VAE with LightningCLI.

``python -m skyreels_v4.audio_vae.train fit --config recipes/audio_vae/tiny.yaml``

The recipe sets ``ckpt_path: last``: a rerun resumes exactly (same batches, same random draws) from
the ``last.ckpt`` its ModelCheckpoint wrote, or starts fresh when there is none; a rerun with a
different configuration is refused. All of that is ``skyreels_v4.runs`` (docs/reliability.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from skyreels_v4.audio_vae.data import AudioFolderDataModule
from skyreels_v4.audio_vae.module import AudioVAELightningModule
from skyreels_v4.runs import RecipeCLI, run_recipe

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> RecipeCLI:
    """Run the recipe CLI on :class:`AudioVAELightningModule` and :class:`AudioFolderDataModule`."""
    # With manual optimisation Lightning warns that step-based checkpoints hold the post-step
    # weights; that is exactly what resuming needs, so the multi-line warning is only noise here.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    return run_recipe(AudioVAELightningModule, AudioFolderDataModule, argv)


if __name__ == "__main__":
    main()
