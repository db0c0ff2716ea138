"""Lightning set-up for FSDP2 + Ulysses training (issue 15; ARCHITECTURE.md section 6).

``SkyReelsParallelStrategy`` is Lightning's ``ModelParallelStrategy`` with our 3-D mesh
``(dp_replicate, dp_shard, sp)`` instead of ``(data_parallel, tensor_parallel)``, and a data sampler
that gives every rank of one ``sp`` group the same samples. Every ``JointTrainingModule`` (and so
every stage and LoRA module) has the ``configure_model`` hook Lightning calls on every rank; under this
strategy it applies ``parallelize`` (Ulysses SP when ``sp`` > 1, FSDP2/HSDP, mixed precision, activation
checkpointing, regional compile) to the transformer and re-creates the EMA shadows on the sharded
parameters (``parallelize_module``); the refiner's ``RefinerLightningModule`` does the same to its
``VideoRefiner``. The data module shards batches over the data-parallel replicas
itself, so the trainer needs ``use_distributed_sampler: false``. Recipes select it by YAML::

    trainer:
      use_distributed_sampler: false
      strategy:
        class_path: skyreels_v4.scale.lightning.SkyReelsParallelStrategy
        init_args: {dp_replicate: 1, sp: 2, mixed_precision: bf16, activation_checkpointing: full}

Checkpoints (``save_distributed_checkpoint``, the default) are folders written by
``skyreels_v4.scale.checkpoint.save_sharded``: every rank writes its shards of the module's weights,
of the optimizer state and of the EMA shadows (``module.ema``, in the parameters' order of the
parallelised model), rank 0 the rest of Lightning's checkpoint (loops, callbacks, random states,
data position) as plain data; the folder appears atomically, and DCP's pickled index is read through
an allow-list. They load on any world size (the data position only on the same data-parallel size).
``find_last_checkpoint`` and ``read_checkpoint`` (``skyreels_v4.runs``) understand them, so
``ckpt_path: last`` resumes a sharded run like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.strategies.parallel import ParallelStrategy

from skyreels_v4.errors import FileFormatError
from skyreels_v4.scale.checkpoint import complete_checkpoint, load_sharded, read_extra, save_sharded
from skyreels_v4.scale.parallelize import (
    ActivationCheckpointing,
    CompileMode,
    MixedPrecision,
    ParallelDims,
    build_device_mesh,
    parallelize,
)
from skyreels_v4.training.module import JointTrainingModule

__all__ = [
    "ParallelJointTrainingModule",
    "SkyReelsParallelStrategy",
    "data_parallel_rank",
    "parallelize_module",
    "resolve_dims",
]


def resolve_dims(world_size: int, *, dp_replicate: int, dp_shard: int | str, sp: int) -> ParallelDims:
    """``ParallelDims`` for ``world_size`` ranks; ``dp_shard="auto"`` takes what replicate and sp leave."""
    if dp_shard == "auto":
        ParallelDims(dp_replicate=dp_replicate, sp=sp)  # validates both
        if world_size % (dp_replicate * sp):
            raise ValueError(
                f"dp_replicate x sp = {dp_replicate}x{sp} must divide the world size {world_size}"
            )
        dp_shard = world_size // (dp_replicate * sp)
    elif isinstance(dp_shard, str):
        raise ValueError(f"dp_shard must be a positive int or 'auto'; got {dp_shard!r}")
    dims = ParallelDims(dp_replicate=dp_replicate, dp_shard=dp_shard, sp=sp)  # validates the ints
    if dims.world_size != world_size:
        raise ValueError(
            f"dp_replicate x dp_shard x sp = {dp_replicate}x{dp_shard}x{sp} = {dims.world_size} must equal "
            f"the world size {world_size}"
        )
    return dims


def data_parallel_rank(coordinate: tuple[int, int, int], dims: ParallelDims) -> tuple[int, int]:
    """(rank, size) of a mesh coordinate ``(r, s, p)`` among the data-parallel replicas: ``r·S + s`` of
    ``R·S``; the ``sp`` coordinate does not count (one ``sp`` group reads one sample)."""
    r, s, _ = coordinate
    return r * dims.dp_shard + s, dims.dp_replicate * dims.dp_shard


class SkyReelsParallelStrategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` over the ``(dp_replicate, dp_shard, sp)`` mesh of ``skyreels_v4.scale``.

    Args:
        dp_replicate, dp_shard, sp: the mesh (``dp_shard="auto"``: world / (replicate x sp)).
        mixed_precision, activation_checkpointing, compile: ``parallelize`` options by value
            (``bf16``/``fp32``, ``none``/``full``/``every_other``, ``none``/``blocks``).
        save_distributed_checkpoint, process_group_backend, timeout: as ``ModelParallelStrategy``.
    """

    def __init__(
        self,
        *,
        dp_replicate: int = 1,
        dp_shard: int | str = "auto",
        sp: int = 1,
        mixed_precision: str = "bf16",
        activation_checkpointing: str = "none",
        compile: str = "none",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if dp_shard != "auto":
            ParallelDims(dp_replicate=dp_replicate, dp_shard=dp_shard, sp=sp)  # type: ignore[arg-type]
        else:
            ParallelDims(dp_replicate=dp_replicate, sp=sp)
        try:
            self.parallel_options = {
                "mixed_precision": MixedPrecision(mixed_precision),
                "activation_checkpointing": ActivationCheckpointing(activation_checkpointing),
                "compile": CompileMode(compile),
            }
        except ValueError as error:
            raise ValueError(f"mixed_precision / activation_checkpointing / compile: {error}") from None
        self._layout = {"dp_replicate": dp_replicate, "dp_shard": dp_shard, "sp": sp}
        self.dims: ParallelDims | None = None

    def setup_environment(self) -> None:
        ParallelStrategy.setup_environment(self)
        self._setup_distributed()
        self.dims = resolve_dims(self.world_size, **self._layout)
        self._device_mesh = build_device_mesh(self.dims, self.root_device.type)
        assert self.lightning_module is not None
        self.lightning_module._device_mesh = self._device_mesh

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any]:
        assert self.dims is not None
        rank, size = data_parallel_rank(tuple(self.device_mesh.get_coordinate()), self.dims)
        return {"num_replicas": size, "rank": rank}

    # -- checkpoints (module docstring) ---------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer | None:
        if len(self.optimizers) > 1:
            raise ValueError(
                "SkyReelsParallelStrategy checkpoints hold one optimizer; the module built "
                f"{len(self.optimizers)}"
            )
        return self.optimizers[0] if self.optimizers else None

    def _ema(self) -> dict[str, torch.Tensor] | None:
        """``module.ema`` keyed by the module's parameter names (the shadows follow the order of the
        parallelised model's parameters)."""
        module = self.lightning_module
        shadows = getattr(module, "ema", None)
        if shadows is None:
            return None
        attribute = getattr(module, "_parallel_attribute", None)
        model = module if attribute is None else getattr(module, attribute)
        prefix = "" if attribute is None else f"{attribute}."
        names = [f"{prefix}{name}" for name, _ in model.named_parameters()]
        if len(names) != len(shadows):
            raise ValueError(f"module.ema: {len(shadows)} shadows for {len(names)} parameters")
        return dict(zip(names, shadows, strict=True))

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None
    ) -> None:
        if not self._save_distributed_checkpoint:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        if storage_options is not None:
            raise TypeError("SkyReelsParallelStrategy.save_checkpoint: storage_options is not supported")
        path = Path(self.broadcast(str(filepath)))
        if self.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.barrier("checkpoint folder")
        extra = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states", "ema")}
        save_sharded(
            path,
            model=self.lightning_module,
            optimizer=self._optimizer(),
            ema=self._ema(),
            step=int(checkpoint.get("global_step", 0)),
            extra=extra,
        )

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(self.broadcast(str(checkpoint_path)))
        if path.is_file():  # a full (single-file) checkpoint
            return super().load_checkpoint(path, weights_only)
        folder = complete_checkpoint(path)
        if folder is None:
            raise FileFormatError(path, "expected a checkpoint file or a complete sharded checkpoint folder")
        load_sharded(folder, model=self.lightning_module, optimizer=self._optimizer(), ema=self._ema())
        return read_extra(folder)

    # Lightning collects these for every checkpoint; ``save_checkpoint`` writes the shards itself, so
    # with distributed checkpoints gathering them here would be work thrown away.
    def lightning_module_state_dict(self) -> dict[str, Any]:
        return {} if self._save_distributed_checkpoint else super().lightning_module_state_dict()

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return {} if self._save_distributed_checkpoint else super().optimizer_state(optimizer)


def parallelize_module(module: L.LightningModule, attribute: str = "transformer") -> None:
    """A training module's ``configure_model``: ``parallelize`` its model (``module.<attribute>``: the
    joint transformer of ``JointTrainingModule``, the ``VideoRefiner`` of ``RefinerLightningModule``)
    with the strategy's options and mesh when the trainer runs ``SkyReelsParallelStrategy`` (once);
    otherwise nothing. EMA shadows (``module.ema``, when the module keeps them) are re-created on the
    sharded parameters."""
    trainer = getattr(module, "_trainer", None)
    strategy = trainer.strategy if trainer is not None else None
    if not isinstance(strategy, SkyReelsParallelStrategy) or getattr(module, "_parallelized", False):
        return
    model = getattr(module, attribute)
    parallelize(model, module.device_mesh, **strategy.parallel_options)
    module._parallel_attribute = attribute  # where the strategy's checkpoints find the EMA's order
    if getattr(module, "ema", None) is not None:  # the shadows follow the parameters' sharding
        module.ema = [p.detach().clone() for p in model.parameters()]
    module._parallelized = True


class ParallelJointTrainingModule(JointTrainingModule):
    """``JointTrainingModule`` under its explicit name for parallel recipes (same args and behaviour:
    every training module parallelises itself in ``configure_model`` under ``SkyReelsParallelStrategy``)."""
