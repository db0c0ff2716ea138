"""The :class:`RunState` callback: random states and run identity inside every checkpoint (issue 14).

Exact resume needs the random draws of step ``k+1`` to be the same whether or not the process
died after step ``k``. The data order and per-item draws come from ``runs.data`` (a function of
seed, epoch and position); everything else (noise, σ, posterior samples, dropout) uses the global
generators, and this callback makes their state at the start of each training batch equal to
their state at the end of the previous one:

- ``on_train_batch_end`` snapshots every generator (``runs.rng.capture_rng``);
- ``on_train_batch_start`` restores the snapshot, so what runs in between (validation, checkpoint
  writing, data-loader iterator creation) cannot shift the stream, in a fresh run or a resumed one;
- the snapshot is the callback's ``state_dict`` (stored in the checkpoint); loading a checkpoint
  makes it the snapshot that the first resumed batch restores. The recipe's ``seed_everything`` at
  start-up therefore only seeds initialisation; it never replays the start of the run.

The callback also stores the run's resolved configuration (``runs.identity``) so that a rerun with
a different one is refused (``ConfigMismatchError``) instead of silently resumed.
"""

from __future__ import annotations

import json
from typing import Any

import lightning as L

from skyreels_v4.runs.rng import capture_rng, restore_rng

__all__ = ["RunState"]


class RunState(L.Callback):
    """Snapshot/restore of random states around training batches, and the run's identity."""

    def __init__(self) -> None:
        self._snapshot: dict[str, Any] | None = None
        self.run_config: dict[str, Any] | None = None
        self.run_id: str | None = None
        self.restored_from_checkpoint = False

    @property
    def state_key(self) -> str:
        return "RunState"

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._snapshot is not None:
            restore_rng(self._snapshot)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._snapshot = capture_rng()

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self._snapshot if self._snapshot is not None else capture_rng(),
            "config": None if self.run_config is None else json.dumps(self.run_config, sort_keys=True),
            "run_id": self.run_id,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng" not in state_dict:
            raise ValueError("RunState: the checkpoint's RunState entry has no 'rng' states")
        self._snapshot = state_dict["rng"]
        self.restored_from_checkpoint = True

    @staticmethod
    def stored_identity(checkpoint: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """(resolved config, run id) stored in a checkpoint by this callback; (None, None) if absent."""
        entry = checkpoint.get("callbacks", {}).get("RunState")
        if not isinstance(entry, dict):
            return None, None
        config = entry.get("config")
        return (json.loads(config) if isinstance(config, str) else None), entry.get("run_id")
