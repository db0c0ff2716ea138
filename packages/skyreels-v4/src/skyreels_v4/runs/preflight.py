"""Pre-flight checks: everything that can be known wrong is found before any work starts (issue 14).

- the data module checks that its data matches the model (sample rate, channels, latent channels,
  sizes) and that its files are readable, by implementing ``preflight(model)`` (see
  :class:`DataPreflight`);
- every output folder of the run (``trainer.default_root_dir``, the loggers' folders, each
  callback's ``dirpath``) can be written: a probe file is created and removed there (or in the
  nearest existing parent), so a bad path fails now, not after hours of training.

Every failure is a :class:`~skyreels_v4.errors.PreflightError` naming the setting and the path or
both values.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning as L

from skyreels_v4.errors import PreflightError

__all__ = ["DataPreflight", "check_matches", "check_writable", "output_folders", "run_preflight"]


@runtime_checkable
class DataPreflight(Protocol):
    """A data module that can check itself against the model before training starts."""

    def preflight(self, model: L.LightningModule) -> None: ...


def check_writable(path: str | os.PathLike[str], setting: str) -> Path:
    """PreflightError unless files can be created in ``path`` (a folder, made later if missing).

    Nothing is left behind: a probe file is written and removed in ``path`` or, if it does not
    exist yet, in its nearest existing ancestor (which must be a folder).
    """
    folder = Path(path).absolute()
    probe_in = folder
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise PreflightError(f"{setting}: expected a writable folder at {folder}, but {probe_in} is a file")
    try:
        handle, probe = tempfile.mkstemp(prefix=".preflight.", dir=probe_in)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise PreflightError(
            f"{setting}: expected a writable folder, cannot write to {folder} ({error.strerror or error})"
        ) from error
    return folder


def check_matches(data_setting: str, data_value: Any, model_setting: str, model_value: Any) -> None:
    """PreflightError naming both settings when the data's value differs from the model's."""
    if data_value != model_value:
        raise PreflightError(
            f"{data_setting}: the data gives {data_value!r} "
            f"but the model expects {model_setting}={model_value!r}"
        )


def output_folders(trainer: L.Trainer) -> list[tuple[str, Path]]:
    """(setting, folder) for every place the run writes to."""
    folders: list[tuple[str, Path]] = [("trainer.default_root_dir", Path(trainer.default_root_dir))]
    for i, logger in enumerate(trainer.loggers):
        save_dir = getattr(logger, "save_dir", None)
        if save_dir:
            folders.append((f"trainer.logger[{i}].save_dir", Path(save_dir)))
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        dirpath = getattr(callback, "dirpath", None)
        if dirpath:
            folders.append((f"{type(callback).__name__}.dirpath", Path(dirpath)))
    return folders


def run_preflight(
    trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule | None
) -> None:
    """All checks of the module docstring; the first failure raises."""
    if isinstance(datamodule, DataPreflight):
        datamodule.preflight(model)
    for setting, folder in output_folders(trainer):
        check_writable(folder, setting)
