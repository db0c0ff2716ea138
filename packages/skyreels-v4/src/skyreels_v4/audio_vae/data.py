"""LightningDataModule over a folder of wav/flac files: resampled, cropped/padded crops.

Every file is decoded once, converted to ``audio_channels`` and resampled to ``sample_rate`` with
soxr, and kept in memory (the recipes use small folders). The train/validation split is
deterministic and stable under adding files: a file goes to validation when the first 8 bytes of
``sha1(relative path)`` as a fraction of 2^64 are below ``val_fraction``.

Training crops are random (``crop_samples`` long, a multiple of the VAE hop), redrawn up to
``crop_tries`` times while their RMS is below ``min_crop_rms`` (keeping the loudest draw): speech
files begin and end with silence, and a silent crop teaches nothing. Validation crops are the
centre of each clip. Clips shorter than the crop are right-padded with zeros.
Batches: ``[B, audio_channels, crop_samples]``.

Resumable (``skyreels_v4.runs``): the training loader is ``runs.dataloader`` and each random crop
draws from ``runs.item_generator(index)``, a function of (seed, epoch, position) only, so a resumed
run sees exactly the crops of the uninterrupted one, with or without workers. ``preflight`` checks
the data against the model before training (sample rate, channels, crop vs hop, readable files).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from skyreels_v4.audio_vae.audio_io import list_audio_files, load_audio
from skyreels_v4.errors import PreflightError
from skyreels_v4.runs import check_matches, dataloader, item_generator

__all__ = ["AudioClipDataset", "AudioFolderDataModule", "is_validation_file"]


def is_validation_file(relative_path: str, val_fraction: float) -> bool:
    """Deterministic split rule (module docstring)."""
    digest = hashlib.sha1(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


class AudioClipDataset(Dataset[Tensor]):
    """Fixed-length crops ``[channels, crop_samples]`` of in-memory clips; one item per clip and repeat.

    Random crops avoid near-silence (module docstring); fixed crops are centred.
    """

    def __init__(
        self,
        clips: list[Tensor],
        *,
        crop_samples: int,
        random_crop: bool,
        repeats: int = 1,
        min_crop_rms: float = 0.0,
        crop_tries: int = 1,
    ) -> None:
        if not clips:
            raise ValueError("clips: expected at least one audio clip")
        if crop_tries < 1:
            raise ValueError(f"crop_tries: expected a positive int, got {crop_tries}")
        self.clips, self.crop_samples, self.random_crop = clips, crop_samples, random_crop
        self.repeats, self.min_crop_rms, self.crop_tries = repeats, min_crop_rms, crop_tries

    def __len__(self) -> int:
        return len(self.clips) * self.repeats

    def __getitem__(self, index: int) -> Tensor:
        generator = item_generator(index)
        clip = self.clips[int(index) % len(self.clips)]
        slack = clip.shape[-1] - self.crop_samples
        if slack <= 0:
            return F.pad(clip, (0, -slack))
        if not self.random_crop:
            return clip[:, slack // 2 : slack // 2 + self.crop_samples]
        best, best_rms = clip[:, : self.crop_samples], -1.0
        for _ in range(self.crop_tries):
            start = int(torch.randint(0, slack + 1, (), generator=generator).item())
            crop = clip[:, start : start + self.crop_samples]
            rms = float(crop.square().mean().sqrt())
            if rms > best_rms:
                best, best_rms = crop, rms
            if rms >= self.min_crop_rms:
                break
        return best


class AudioFolderDataModule(L.LightningDataModule):
    """Train/validation crops from ``root`` (see the module docstring)."""

    def __init__(
        self,
        *,
        root: str,
        sample_rate: int = 44100,
        audio_channels: int = 1,
        crop_samples: int = 32768,
        hop_length: int = 1024,
        batch_size: int = 4,
        val_fraction: float = 0.1,
        train_repeats: int = 1,
        min_crop_rms: float = 0.01,
        crop_tries: int = 8,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("sample_rate", sample_rate, 1),
            ("audio_channels", audio_channels, 1),
            ("hop_length", hop_length, 1),
            ("batch_size", batch_size, 1),
            ("train_repeats", train_repeats, 1),
            ("crop_tries", crop_tries, 1),
            ("num_workers", num_workers, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        if not 0.0 <= min_crop_rms < float("inf"):
            raise ValueError(f"min_crop_rms: expected a finite number >= 0, got {min_crop_rms}")
        if crop_samples <= 0 or crop_samples % hop_length:
            raise ValueError(
                f"crop_samples: expected a positive multiple of hop_length={hop_length}, got {crop_samples}"
            )
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction: expected a number in (0, 1), got {val_fraction}")
        self.root = Path(root)
        self.sample_rate, self.audio_channels = sample_rate, audio_channels
        self.crop_samples, self.batch_size = crop_samples, batch_size
        self.val_fraction, self.train_repeats, self.num_workers = val_fraction, train_repeats, num_workers
        self.min_crop_rms, self.crop_tries = min_crop_rms, crop_tries
        self.hop_length, self.seed = hop_length, seed
        self.train_clips: list[Tensor] = []
        self.val_clips: list[Tensor] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_clips or self.val_clips:
            return
        files = list_audio_files(self.root)
        for path in files:
            clip = load_audio(path, sample_rate=self.sample_rate, channels=self.audio_channels)
            is_val = is_validation_file(path.relative_to(self.root).as_posix(), self.val_fraction)
            (self.val_clips if is_val else self.train_clips).append(clip)
        if not self.train_clips or not self.val_clips:
            raise ValueError(
                f"root: {len(files)} files in {self.root} gave {len(self.train_clips)} training and "
                f"{len(self.val_clips)} validation clips; expected at least one of each (adjust val_fraction)"
            )

    def preflight(self, model: L.LightningModule) -> None:
        """Data vs model before any training: sample rate, channels, crop length vs the VAE hop, and
        every file readable (this loads the clips; ``setup`` then reuses them)."""
        config = getattr(model, "vae_config", None)
        if config is not None:
            check_matches("data.sample_rate", self.sample_rate, "model.vae.sample_rate", config.sample_rate)
            check_matches(
                "data.audio_channels", self.audio_channels, "model.vae.audio_channels", config.audio_channels
            )
            hop = int(model.vae.hop_length)
            if self.crop_samples % hop:
                raise PreflightError(
                    f"data.crop_samples: expected a multiple of the model's hop {hop} "
                    f"(product of model.vae.strides), got {self.crop_samples}"
                )
            check_matches(
                "data.hop_length", self.hop_length, "the model's hop (product of model.vae.strides)", hop
            )
        if not self.root.is_dir():
            raise PreflightError(
                f"data.root: expected a folder of wav/flac files, {self.root} does not exist"
            )
        if not list_audio_files(self.root):
            raise PreflightError(f"data.root: expected wav/flac files, found none in {self.root}")
        self.setup("fit")

    def train_dataloader(self) -> DataLoader[Tensor]:
        dataset = AudioClipDataset(
            self.train_clips,
            crop_samples=self.crop_samples,
            random_crop=True,
            repeats=self.train_repeats,
            min_crop_rms=self.min_crop_rms,
            crop_tries=self.crop_tries,
        )
        return dataloader(
            dataset, batch_size=self.batch_size, seed=self.seed, drop_last=True, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader[Tensor]:
        dataset = AudioClipDataset(self.val_clips, crop_samples=self.crop_samples, random_crop=False)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
