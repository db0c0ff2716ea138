"""Training of the SR + frame-interpolation refiner with VSA (``skyreels_refiner_vsa``).

Command: ``python -m skyreels_v4.refiner.train fit --config recipes/refiner/tiny.yaml`` (LightningCLI).
See docs/refiner-vsa.md.
"""

from skyreels_v4.refiner.data import ProceduralRefinerTriples, RefinerTripleDataModule, downsample_latents
from skyreels_v4.refiner.module import RefinerLightningModule

__all__ = [
    "ProceduralRefinerTriples",
    "RefinerLightningModule",
    "RefinerTripleDataModule",
    "downsample_latents",
]
