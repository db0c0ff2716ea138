"""The one recipe entry point: LightningCLI with exact resume, run identity, pre-flight checks and
non-finite guards (issue 14). Every recipe's ``train.py`` is ``run_recipe(Module, DataModule, argv)``.

What :class:`RecipeCLI` adds to ``LightningCLI`` (docs/reliability.md):

1. callbacks :class:`~skyreels_v4.runs.state.RunState` (random states + identity in checkpoints) and
   :class:`~skyreels_v4.guards.NonFiniteGuard` (``on_nonfinite: stop|skip``), and the
   :class:`~skyreels_v4.runs.checkpoints.AtomicCheckpointIO` plugin (atomic saves, typed
   ``weights_only=True`` loads);
2. before ``fit``: pre-flight checks (``runs.preflight``); ``ckpt_path: last`` resolved here, the
   checkpoint read with typed errors, its stored configuration compared with the given one
   (``ConfigMismatchError`` listing the keys) and its weights checked for NaN/inf;
3. ``--fork_from CKPT`` (with ``--fork_state weights|weights_and_optimizer``): a new run initialised
   from another run's checkpoint. The fork is its own run: rerunning the fork command after a
   crash resumes the fork, not the original;
4. ``<default_root_dir>/run.json``: the run id, the resolved configuration, where it resumed or
   forked from.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from skyreels_v4.errors import ConfigMismatchError, FileFormatError, PreflightError
from skyreels_v4.guards import NonFiniteGuard, OnNonFinite, check_finite_state
from skyreels_v4.io import atomic_write_json
from skyreels_v4.runs.checkpoints import AtomicCheckpointIO, read_checkpoint, sharded_checkpoint
from skyreels_v4.runs.identity import check_same_run, flatten_config
from skyreels_v4.runs.preflight import run_preflight
from skyreels_v4.runs.state import RunState

__all__ = ["RecipeCLI", "find_last_checkpoint", "run_recipe"]


def find_last_checkpoint(trainer: L.Trainer) -> Path | None:
    """The newest ``last*.ckpt`` among the trainer's ModelCheckpoint folders, or None: files, and the
    folders of sharded runs (``SkyReelsParallelStrategy``; also one whose save was killed just before
    its final rename, found by its complete ``.partial`` twin)."""
    found: dict[Path, float] = {}
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            folder = Path(callback.dirpath)
            if not folder.is_dir():
                continue
            pattern = f"{callback.CHECKPOINT_NAME_LAST}*{callback.FILE_EXTENSION}"
            names = [*folder.glob(pattern), *(p.with_suffix("") for p in folder.glob(pattern + ".partial"))]
            for path in names:
                if path.name.startswith("."):
                    continue
                if path.is_file():
                    found[path] = path.stat().st_mtime
                elif (sharded := sharded_checkpoint(path)) is not None:
                    found[path] = sharded.stat().st_mtime
    return max(found, key=lambda p: found[p]) if found else None


class _LoadOptimizerStates(L.Callback):
    """Puts a forked run's per-parameter optimiser states into the freshly built optimisers
    (keeping the new run's hyperparameters)."""

    def __init__(self, states: list[dict[str, Any]], source: Path) -> None:
        self.states, self.source = states, source

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if len(self.states) != len(trainer.optimizers):
            raise ConfigMismatchError(
                f"fork_state: {self.source} holds {len(self.states)} optimiser states, "
                f"the model builds {len(trainer.optimizers)} optimisers"
            )
        for optimizer, state in zip(trainer.optimizers, self.states, strict=True):
            # The fork's own hyperparameters (learning rate, betas, ...) win over the checkpoint's;
            # only the per-parameter state (moments, step counts) is taken.
            settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
            try:
                optimizer.load_state_dict(state)
                for group, own in zip(optimizer.param_groups, settings, strict=True):
                    group.update(own)
            except (ValueError, KeyError) as error:
                raise ConfigMismatchError(
                    f"fork_state: {self.source}'s optimiser state does not fit this model ({error})"
                ) from error


def _find(trainer: L.Trainer, kind: type) -> Any:
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, kind):
            return callback
    raise RuntimeError(f"RecipeCLI: the trainer has no {kind.__name__} callback")


class RecipeCLI(LightningCLI):
    """LightningCLI for skyreels-v4 recipes (module docstring). Parser errors raise, not exit."""

    def __init__(
        self, model_class: Any, datamodule_class: Any, *, args: Sequence[str] | None = None, **kwargs: Any
    ):
        defaults = kwargs.pop("trainer_defaults", {}) or {}
        callbacks = list(defaults.pop("callbacks", []))
        callbacks += [RunState(), NonFiniteGuard()]
        defaults = {"callbacks": callbacks, **defaults}
        parser_kwargs = {"exit_on_error": False, **kwargs.pop("parser_kwargs", {})}
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(
            model_class,
            datamodule_class,
            args=list(args) if args is not None else None,
            trainer_defaults=defaults,
            parser_kwargs=parser_kwargs,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--fork_from",
            type=str | None,
            default=None,
            help="start a NEW run from this checkpoint's weights (use a new output folder)",
        )
        parser.add_argument(
            "--fork_state",
            type=Literal["weights", "weights_and_optimizer"],
            default="weights",
            help="what --fork_from takes from the checkpoint",
        )
        parser.add_argument(
            "--on_nonfinite",
            type=Literal["stop", "skip"],
            default="stop",
            help="on a NaN/inf loss or gradient: stop (no checkpoint written) or skip the batch",
        )

    def before_fit(self) -> None:
        config = self.config[self.subcommand]
        given = flatten_config(config.as_dict())
        trainer, model = self.trainer, self.model
        run_state: RunState = _find(trainer, RunState)
        guard: NonFiniteGuard = _find(trainer, NonFiniteGuard)
        guard.on_nonfinite = OnNonFinite(config.on_nonfinite)
        run_preflight(trainer, model, self.datamodule)
        # Set here, not as a trainer default: a plugin object would become part of the config.
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()

        ckpt_path = config.ckpt_path
        resume: Path | None
        if ckpt_path == "last":
            resume = find_last_checkpoint(trainer)
        elif ckpt_path is None:
            resume = None
        elif str(ckpt_path) in ("best", "hpc", "registry"):
            raise PreflightError(f"ckpt_path: expected 'last', null or a file, got {ckpt_path!r}")
        else:
            resume = Path(ckpt_path)
        record: dict[str, Any] = {"config": given}
        if resume is not None:
            checkpoint = read_checkpoint(resume, mmap=True)
            stored, run_id = RunState.stored_identity(checkpoint)
            if stored is None:
                raise FileFormatError(
                    resume,
                    "this checkpoint carries no run identity (not written by a skyreels-v4 recipe); "
                    f"start a new run from it with --fork_from {resume} and a new output folder",
                )
            check_same_run(stored, given, checkpoint=str(resume))
            if "state_dict" in checkpoint:  # a sharded checkpoint's weights are checked as they load
                check_finite_state(checkpoint["state_dict"], str(resume))
            run_state.run_id = run_id
            record["resumed_from"] = str(resume)
            self.config_init[self.subcommand]["ckpt_path"] = str(resume)
        else:
            run_state.run_id = uuid.uuid4().hex
            self.config_init[self.subcommand]["ckpt_path"] = None
            if config.fork_from is not None:
                self._fork(Path(config.fork_from), config.fork_state)
                record["forked_from"] = str(config.fork_from)
        if "weights_only" in self.config_init[self.subcommand]:
            self.config_init[self.subcommand]["weights_only"] = True
        run_state.run_config = given
        record["run_id"] = run_state.run_id
        atomic_write_json(Path(trainer.default_root_dir) / "run.json", record)

    def _fork(self, source: Path, fork_state: str) -> None:
        checkpoint = read_checkpoint(source, lightning=False)
        if "sharded_weights" in checkpoint:
            raise FileFormatError(
                source,
                "fork_from: a sharded checkpoint folder (SkyReelsParallelStrategy); resume it with the "
                "recipe that wrote it, or start the new run from its exported model folder "
                "(skyreels_v4.scale.export_pretrained, or the ExportModel callback) as model.init_from",
            )
        state = checkpoint.get("state_dict")
        if not isinstance(state, dict):
            raise FileFormatError(source, "fork_from: expected a checkpoint with a 'state_dict'")
        check_finite_state(state, str(source))
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise ConfigMismatchError(
                f"fork_from: {source}'s weights do not fit this model ({first})"
            ) from error
        if fork_state == "weights_and_optimizer":
            states = checkpoint.get("optimizer_states")
            if not isinstance(states, list):
                raise FileFormatError(source, "fork_state: the checkpoint holds no optimizer_states")
            self.trainer.callbacks.append(_LoadOptimizerStates(states, source))  # type: ignore[attr-defined]


def run_recipe(
    model_class: Any, datamodule_class: Any, argv: Sequence[str] | None = None, **kwargs: Any
) -> RecipeCLI:
    """``RecipeCLI(model_class, datamodule_class, args=argv)``; the body of every recipe's ``main``."""
    return RecipeCLI(model_class, datamodule_class, args=argv, **kwargs)
