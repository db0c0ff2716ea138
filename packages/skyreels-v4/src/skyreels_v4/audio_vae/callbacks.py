"""Callbacks for audio-VAE training: loss-curve PNG, reconstruction wavs, exported weights.

All three write atomically under their own ``dirpath`` and keep working across ``ckpt_path: last``
resumes: the loss history is callback state saved in the Lightning checkpoint, and the initial
weights are exported only on a fresh start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import matplotlib
import torch

from skyreels_audio_vae import estimate_latent_statistics, save_audio_vae
from skyreels_v4.audio_vae.audio_io import atomic_write, write_wav
from skyreels_v4.audio_vae.module import AudioVAELightningModule

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["AudioReconstructionWriter", "AudioVAEWeightsExporter", "LossCurvePlotter"]


def _require_module(pl_module: L.LightningModule) -> AudioVAELightningModule:
    if not isinstance(pl_module, AudioVAELightningModule):
        raise TypeError(f"pl_module: expected AudioVAELightningModule, got {type(pl_module).__name__}")
    return pl_module


class LossCurvePlotter(L.Callback):
    """Records ``train/*`` every step and ``val/*`` every validation; writes ``dirpath/filename``.

    The PNG has one panel of training terms (log scale, with a moving average) and one of
    validation metrics; it is rewritten after every validation and at the end of training.
    """

    def __init__(self, *, dirpath: str, filename: str = "loss_curves.png", smoothing: int = 20) -> None:
        self.dirpath, self.filename, self.smoothing = Path(dirpath), filename, smoothing
        self.train_history: dict[str, list[tuple[int, float]]] = {}
        self.val_history: dict[str, list[tuple[int, float]]] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"train_history": self.train_history, "val_history": self.val_history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_history = {k: [tuple(p) for p in v] for k, v in state_dict["train_history"].items()}  # type: ignore[misc]
        self.val_history = {k: [tuple(p) for p in v] for k, v in state_dict["val_history"].items()}  # type: ignore[misc]

    def _record(
        self, history: dict[str, list[tuple[int, float]]], prefix: str, trainer: L.Trainer, step: int
    ) -> None:
        for key, value in trainer.callback_metrics.items():
            if key.startswith(prefix) and isinstance(value, torch.Tensor) and value.numel() == 1:
                history.setdefault(key, []).append((step, float(value)))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._record(self.train_history, "train/", trainer, _require_module(pl_module).vae_steps)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._record(self.val_history, "val/", trainer, _require_module(pl_module).vae_steps)
        self.write(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer)

    def write(self, trainer: L.Trainer) -> Path | None:
        if not trainer.is_global_zero or not self.train_history:
            return None
        fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(12, 4.5))
        for key in (
            "train/loss",
            "train/stft_sc",
            "train/stft_logmag",
            "train/mel",
            "train/waveform_l1",
            "train/kl",
            "train/discriminator",
            "train/adversarial",
            "train/feature_matching",
        ):
            points = self.train_history.get(key)
            if not points:
                continue
            steps = torch.tensor([p[0] for p in points], dtype=torch.float64)
            values = torch.tensor([p[1] for p in points], dtype=torch.float64)
            window = max(1, min(self.smoothing, len(values)))
            smooth = torch.nn.functional.avg_pool1d(values[None, None], window, 1).flatten()
            (line,) = ax_train.plot(steps.numpy(), values.numpy(), alpha=0.25, linewidth=0.8)
            ax_train.plot(steps[window - 1 :].numpy(), smooth.numpy(), color=line.get_color(), label=key[6:])
        ax_train.set(
            xlabel="VAE step", ylabel="loss term", yscale="log", title="training terms (raw and moving mean)"
        )
        ax_train.legend(fontsize=8)
        for key, label in (("val/mel_distance", "mel distance"), ("val/stft_distance", "MR-STFT distance")):
            points = self.val_history.get(key)
            if points:
                ax_val.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        ax_val.set(xlabel="VAE step", ylabel="distance (lower is better)", title="validation")
        ax_snr = ax_val.twinx()
        points = self.val_history.get("val/si_snr_db")
        if points:
            ax_snr.plot(
                [p[0] for p in points], [p[1] for p in points], marker="s", color="black", label="SI-SNR (dB)"
            )
            ax_snr.set_ylabel("SI-SNR dB (higher is better)")
        handles = ax_val.get_legend_handles_labels()[0] + ax_snr.get_legend_handles_labels()[0]
        ax_val.legend(handles=handles, fontsize=8)
        fig.tight_layout()
        try:
            return atomic_write(
                self.dirpath / self.filename, lambda tmp: fig.savefig(tmp, dpi=110, format="png")
            )
        finally:
            plt.close(fig)


class AudioReconstructionWriter(L.Callback):
    """After each validation, writes the first ``max_examples`` validation clips and their
    reconstructions as ``dirpath/step{N:06d}_{i}_{target|reconstruction}.wav``."""

    def __init__(self, *, dirpath: str, max_examples: int = 2) -> None:
        self.dirpath, self.max_examples = Path(dirpath), max_examples

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if (
            batch_idx != 0
            or trainer.sanity_checking
            or not trainer.is_global_zero
            or not isinstance(outputs, dict)
        ):
            return
        module = _require_module(pl_module)
        rate = module.vae_config.sample_rate
        for i in range(min(self.max_examples, outputs["target"].shape[0])):
            for name in ("target", "reconstruction"):
                path = self.dirpath / f"step{module.vae_steps:06d}_{i}_{name}.wav"
                write_wav(path, outputs[name][i], rate)


class AudioVAEWeightsExporter(L.Callback):
    """Exports the VAE as safetensors + config.json: ``dirpath/init`` at a fresh start and
    ``dirpath/final`` at the end of training, the latter with latent statistics estimated on
    ``statistics_batches`` training batches (``skyreels_audio_vae.estimate_latent_statistics``)."""

    def __init__(self, *, dirpath: str, statistics_batches: int = 8) -> None:
        self.dirpath, self.statistics_batches = Path(dirpath), statistics_batches

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None and trainer.is_global_zero:
            save_audio_vae(_require_module(pl_module).vae, self.dirpath / "init")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        module = _require_module(pl_module)
        loader = trainer.train_dataloader
        if loader is not None and self.statistics_batches > 0:
            batches = []
            for i, batch in enumerate(loader):
                if i >= self.statistics_batches:
                    break
                batches.append(batch.to(module.device))
            was_training = module.vae.training
            module.vae.eval()
            mean, std = estimate_latent_statistics(module.vae, batches)
            module.vae.train(was_training)
            module.vae.set_latent_statistics(mean.to(module.device), std.to(module.device))
        save_audio_vae(module.vae, self.dirpath / "final")
