"""Lightning set-up for FSDP2 + Ulysses training (issue 15; ARCHITECTURE.md section 6).

``SkyReelsParallelStrategy`` is Lightning's ``ModelParallelStrategy`` with our 3-D mesh
``(dp_replicate, dp_shard, sp)`` instead of ``(data_parallel, tensor_parallel)``, and a data sampler
that gives every rank of one ``sp`` group the same samples. Every ``JointTrainingModule`` (and so
every stage and LoRA module) has the ``configure_model`` hook Lightning calls on every rank; under this
strategy it applies ``parallelize`` (Ulysses SP when ``sp`` > 1, FSDP2/HSDP, mixed precision, activation
checkpointing, regional compile) to the transformer and re-creates the EMA shadows on the sharded
parameters (``parallelize_module``). The data module shards batches over the data-parallel replicas
itself, so the trainer needs ``use_distributed_sampler: false``. Recipes select it by YAML::

    trainer:
      use_distributed_sampler: false
      strategy:
        class_path: skyreels_v4.scale.lightning.SkyReelsParallelStrategy
        init_args: {dp_replicate: 1, sp: 2, mixed_precision: bf16, activation_checkpointing: full}
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.strategies.parallel import ParallelStrategy

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


def parallelize_module(module: JointTrainingModule) -> None:
    """``JointTrainingModule.configure_model``: ``parallelize`` its transformer with the strategy's
    options and mesh when the trainer runs ``SkyReelsParallelStrategy`` (once); otherwise nothing."""
    trainer = getattr(module, "_trainer", None)
    strategy = trainer.strategy if trainer is not None else None
    if not isinstance(strategy, SkyReelsParallelStrategy) or getattr(module, "_parallelized", False):
        return
    parallelize(module.transformer, module.device_mesh, **strategy.parallel_options)
    if module.ema is not None:  # the shadows follow the parameters' sharding
        module.ema = [p.detach().clone() for p in module.transformer.parameters()]
    module._parallelized = True


class ParallelJointTrainingModule(JointTrainingModule):
    """``JointTrainingModule`` under its explicit name for parallel recipes (same args and behaviour:
    every training module parallelises itself in ``configure_model`` under ``SkyReelsParallelStrategy``)."""
