"""Training, data and evaluation for the 44.1 kHz audio VAE (``skyreels_audio_vae``).

Commands: ``python -m skyreels_v4.audio_vae.make_dataset``, ``python -m skyreels_v4.audio_vae.train``
(LightningCLI), ``python -m skyreels_v4.audio_vae.evaluate``. See docs/audio-vae.md.
"""

from skyreels_v4.audio_vae.audio_io import convert_channels, list_audio_files, load_audio, write_wav
from skyreels_v4.audio_vae.callbacks import (
    AudioReconstructionWriter,
    AudioVAEWeightsExporter,
    LossCurvePlotter,
)
from skyreels_v4.audio_vae.data import AudioClipDataset, AudioFolderDataModule, is_validation_file
from skyreels_v4.audio_vae.metrics import ReconstructionMetrics, ReconstructionScores
from skyreels_v4.audio_vae.module import AudioVAELightningModule

__all__ = [
    "AudioClipDataset",
    "AudioFolderDataModule",
    "AudioReconstructionWriter",
    "AudioVAELightningModule",
    "AudioVAEWeightsExporter",
    "LossCurvePlotter",
    "ReconstructionMetrics",
    "ReconstructionScores",
    "convert_channels",
    "is_validation_file",
    "list_audio_files",
    "load_audio",
    "write_wav",
]
