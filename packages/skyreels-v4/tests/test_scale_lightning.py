"""The Lightning set-up of issue 15 without processes: mesh sizes, the data-parallel rank of every mesh
coordinate (ranks of one sp group read the same samples), the strategy's options and its errors, and
the module's configure_model hook. The multi-process behaviour it applies (parallelize with SP,
FSDP2, HSDP, checkpointing) is tested with gloo in test_scale_parallelize / _sequence_parallel."""

from __future__ import annotations

import itertools

import pytest
from lightning.pytorch.strategies import ModelParallelStrategy

from skyreels_v4.scale.lightning import (
    ParallelJointTrainingModule,
    SkyReelsParallelStrategy,
    data_parallel_rank,
    resolve_dims,
)
from skyreels_v4.scale.parallelize import ActivationCheckpointing, CompileMode, MixedPrecision, ParallelDims


def test_resolve_dims():
    assert resolve_dims(8, dp_replicate=1, dp_shard="auto", sp=2) == ParallelDims(dp_shard=4, sp=2)
    assert resolve_dims(8, dp_replicate=2, dp_shard=2, sp=2).world_size == 8
    with pytest.raises(ValueError, match="must divide the world size 6"):
        resolve_dims(6, dp_replicate=1, dp_shard="auto", sp=4)
    with pytest.raises(ValueError, match="must equal the world size 8"):
        resolve_dims(8, dp_replicate=1, dp_shard=2, sp=2)
    with pytest.raises(ValueError, match="dp_shard"):
        resolve_dims(8, dp_replicate=1, dp_shard="all", sp=2)
    with pytest.raises(ValueError, match="sp"):
        resolve_dims(8, dp_replicate=1, dp_shard="auto", sp=0)


def test_data_parallel_rank_shares_samples_within_an_sp_group():
    dims = ParallelDims(dp_replicate=2, dp_shard=3, sp=2)
    seen = {}
    for coordinate in itertools.product(range(2), range(3), range(2)):
        rank, size = data_parallel_rank(coordinate, dims)
        assert size == 6
        seen.setdefault(rank, set()).add(coordinate[:2])
    assert sorted(seen) == list(range(6))  # every replica reads its own shard of the data
    assert all(len(v) == 1 for v in seen.values())  # and only the sp coordinate shares one


def test_strategy_options_and_errors():
    strategy = SkyReelsParallelStrategy(sp=2, mixed_precision="fp32", activation_checkpointing="full")
    assert isinstance(strategy, ModelParallelStrategy)
    assert strategy.parallel_options == {
        "mixed_precision": MixedPrecision.FP32,
        "activation_checkpointing": ActivationCheckpointing.FULL,
        "compile": CompileMode.NONE,
    }
    with pytest.raises(ValueError, match="activation_checkpointing"):
        SkyReelsParallelStrategy(activation_checkpointing="some")
    with pytest.raises(ValueError, match="sp"):
        SkyReelsParallelStrategy(sp=0)
    with pytest.raises(ValueError, match="dp_shard"):
        SkyReelsParallelStrategy(dp_shard=-1)


def test_module_overrides_configure_model():
    # Lightning's ModelParallelStrategy refuses a module that does not override configure_model.
    from lightning.pytorch.utilities.model_helpers import is_overridden

    module = ParallelJointTrainingModule(video_latent_channels=4, audio_latent_channels=8)
    assert is_overridden("configure_model", module)
