"""``parallelize``: the one place that applies FSDP2/HSDP, mixed precision, activation checkpointing
and regional ``torch.compile`` to a built ``JointAudioVideoTransformer`` or the refiner of paper 4.5
(``VideoRefiner``) (issue 15; ARCHITECTURE.md section 6). The model code stays single-device, as
torchtitan separates ``parallelize`` from the model definition.

Sharding: one FSDP2 unit per block of each branch and per audio-video exchange (eq. 5), the root
takes what is left (embeddings, text refiners, final layers). The joint model calls a paired
block's ``attention_stage`` and ``feed_forward_stage`` instead of its ``forward``, so both are
registered as FSDP forward methods (each gathers the block's weights); the refiner's blocks too (their
attention stage is the VSA stage; the VSA gates stay in the root unit). Weights are sharded over the
flattened ``dp_shard x sp`` ranks and replicated over ``dp_replicate`` (HSDP when it is > 1).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

from skyreels_mmdit_blocks import JointAudioVideoTransformer
from skyreels_refiner_vsa import VideoRefiner
from skyreels_v4.scale.sequence_parallel import apply_sequence_parallel

__all__ = [
    "MESH_DIM_NAMES",
    "ActivationCheckpointing",
    "CompileMode",
    "MixedPrecision",
    "ParallelDims",
    "build_device_mesh",
    "parallelize",
    "shard_mesh",
]

MESH_DIM_NAMES = ("dp_replicate", "dp_shard", "sp")


class MixedPrecision(enum.Enum):
    """FSDP2 precision policy: fp32 everywhere, or bf16 compute with fp32 master weights and fp32
    gradient reduction."""

    FP32 = "fp32"
    BF16 = "bf16"

    def policy(self) -> MixedPrecisionPolicy:
        if self is MixedPrecision.FP32:
            return MixedPrecisionPolicy()
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


class ActivationCheckpointing(enum.Enum):
    NONE = "none"
    FULL = "full"  # every block (exchange pairs as one unit)
    EVERY_OTHER = "every_other"


class CompileMode(enum.Enum):
    NONE = "none"
    BLOCKS = "blocks"  # regional: torch.compile each block (and exchange) in place


@dataclass(frozen=True, kw_only=True)
class ParallelDims:
    """``dp_replicate x dp_shard x sp`` ranks (their product is the world size)."""

    dp_replicate: int = 1
    dp_shard: int = 1
    sp: int = 1

    def __post_init__(self) -> None:
        for name in MESH_DIM_NAMES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")

    @property
    def world_size(self) -> int:
        return self.dp_replicate * self.dp_shard * self.sp


def build_device_mesh(dims: ParallelDims, device_type: str = "cpu") -> DeviceMesh:
    """A 3-D mesh named ``("dp_replicate", "dp_shard", "sp")`` over the initialised process group."""
    if not isinstance(dims, ParallelDims):
        raise TypeError(f"dims must be a ParallelDims; got {type(dims).__name__}")
    if not torch.distributed.is_initialized():
        raise RuntimeError("build_device_mesh needs torch.distributed initialised (torchrun / Lightning)")
    world = torch.distributed.get_world_size()
    if dims.world_size != world:
        raise ValueError(
            f"dims dp_replicate x dp_shard x sp = {dims.dp_replicate}x{dims.dp_shard}x{dims.sp} = "
            f"{dims.world_size} must equal the world size {world}"
        )
    return init_device_mesh(
        device_type, (dims.dp_replicate, dims.dp_shard, dims.sp), mesh_dim_names=MESH_DIM_NAMES
    )


def shard_mesh(mesh: DeviceMesh) -> DeviceMesh:
    """The mesh FSDP2 shards over: ``dp_shard x sp`` flattened, with ``dp_replicate`` first (HSDP)
    when it is larger than 1."""
    if tuple(mesh.mesh_dim_names or ()) != MESH_DIM_NAMES:
        raise ValueError(f"mesh must have dims {MESH_DIM_NAMES}; got {mesh.mesh_dim_names}")
    mesh["dp_shard", "sp"]._flatten("dp_shard_sp")
    if mesh["dp_replicate"].size() > 1:
        return mesh["dp_replicate", "dp_shard_sp"]
    return mesh["dp_shard_sp"]


def parallelize(
    model: JointAudioVideoTransformer | VideoRefiner,
    mesh: DeviceMesh,
    *,
    mixed_precision: MixedPrecision = MixedPrecision.BF16,
    activation_checkpointing: ActivationCheckpointing = ActivationCheckpointing.NONE,
    compile: CompileMode = CompileMode.NONE,
) -> JointAudioVideoTransformer:
    """Apply Ulysses sequence parallelism (when the mesh's ``sp`` > 1), checkpointing, regional compile
    and FSDP2 (in that order) to ``model`` in place. All ranks of one ``sp`` group must be given the
    same batch (``data_parallel_rank``)."""
    if not isinstance(model, (JointAudioVideoTransformer, VideoRefiner)):
        raise TypeError(
            f"model must be a JointAudioVideoTransformer or a VideoRefiner; got {type(model).__name__}"
        )
    for name, value, kind in (
        ("mixed_precision", mixed_precision, MixedPrecision),
        ("activation_checkpointing", activation_checkpointing, ActivationCheckpointing),
        ("compile", compile, CompileMode),
    ):
        if not isinstance(value, kind):
            raise TypeError(f"{name} must be a {kind.__name__}; got {value!r}")

    if tuple(mesh.mesh_dim_names or ()) != MESH_DIM_NAMES:
        raise ValueError(f"mesh must have dims {MESH_DIM_NAMES}; got {mesh.mesh_dim_names}")
    if mesh["sp"].size() > 1:
        apply_sequence_parallel(model, mesh["sp"].get_group())

    refiner = isinstance(model, VideoRefiner)
    if activation_checkpointing is ActivationCheckpointing.FULL:
        model.set_activation_checkpointing(True)
    elif activation_checkpointing is ActivationCheckpointing.EVERY_OTHER and refiner:
        model.set_activation_checkpointing(range(0, model.config.branch.num_blocks, 2))
    elif activation_checkpointing is ActivationCheckpointing.EVERY_OTHER:
        model.set_activation_checkpointing(
            range(0, model.config.video.num_blocks, 2), range(0, model.config.audio.num_blocks, 2)
        )

    blocks: list[nn.Module] = (
        [*model.branch.blocks] if refiner else [*model.video.blocks, *model.audio.blocks]
    )
    units: list[nn.Module] = blocks if refiner else [*blocks, *model.exchanges]
    if compile is CompileMode.BLOCKS:
        for unit in units:
            unit.compile()

    fsdp_mesh = shard_mesh(mesh)
    policy = mixed_precision.policy()
    for unit in units:
        fully_shard(unit, mesh=fsdp_mesh, mp_policy=policy)
    for block in blocks:
        register_fsdp_forward_method(block, "attention_stage")
        register_fsdp_forward_method(block, "feed_forward_stage")
    fully_shard(model, mesh=fsdp_mesh, mp_policy=policy)
    return model
