"""Callbacks the resume tests load into recipe child processes (through the recipe YAML); no tests here.

- ``StepLossLog`` appends ``{"step", "epoch", "batch", "loss"}`` per training batch to a JSON-lines
  file (flushed and fsynced, so a SIGKILL loses nothing already written);
- ``KillAtStep`` sends SIGKILL to its own process at the start of the batch with the given global
  step, once per step (a marker file beside the log remembers it), like a preempted job.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch


class StepLossLog(L.Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        record = {
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "batch": batch_idx,
            "loss": float(torch.as_tensor(loss).item()),
        }
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


class KillAtStep(L.Callback):
    def __init__(self, steps: list[int], marker_dir: str) -> None:
        self.steps, self.marker_dir = list(steps), Path(marker_dir)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        marker = self.marker_dir / f"killed_at_{step}"
        if step in self.steps and not marker.exists():
            marker.write_text(f"epoch {trainer.current_epoch} batch {batch_idx}\n")
            os.kill(os.getpid(), signal.SIGKILL)
