"""The transformer's folder: the `full` preset on the meta device (config round trip, parameter counts,
shard plan), save/load round trips through the shard reader, and from_pretrained's peak host memory."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from skyreels_mmdit_blocks import (
    CheckpointFormat,
    JointAudioVideoTransformerConfig,
    MMDiTBranch,
    export_hunyuan_state_dict,
    infer_hunyuan_branch_config,
    parameter_counts,
)
from skyreels_v4.errors import FileFormatError, NonFiniteError
from skyreels_v4.model import SkyReelsV4Transformer, from_plain, plan_shards, to_plain, transformer_preset
from skyreels_v4.model.weights import INDEX_NAME, WEIGHTS_NAME

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "memory_from_pretrained.py"
GB5 = 5 * 2**30


@pytest.fixture(scope="module")
def full_on_meta():
    config = transformer_preset("full")
    with torch.device("meta"):
        model = SkyReelsV4Transformer(config).to(torch.bfloat16)
    return config, model


def test_full_preset_config_round_trips_through_json(full_on_meta):
    config, _ = full_on_meta
    text = json.dumps({"transformer": to_plain(config), "prediction": "velocity"})
    again = from_plain(JointAudioVideoTransformerConfig, json.loads(text)["transformer"], name="transformer")
    assert again == config
    assert (config.video.dim, config.video.num_heads, config.video.num_dual_blocks) == (3072, 24, 20)
    assert (config.video.num_single_blocks, config.video.in_channels, config.audio.in_channels) == (
        40,
        33,
        64,
    )


def test_full_preset_parameter_counts_on_meta(full_on_meta):
    config, model = full_on_meta
    assert all(p.is_meta for p in model.parameters())
    total = sum(p.numel() for p in model.parameters())
    video = sum(p.numel() for p in model.video.parameters())
    audio = sum(p.numel() for p in model.audio.parameters())
    exchanges = sum(p.numel() for p in model.exchanges.parameters())
    assert total == video + audio + exchanges
    counts = parameter_counts(config)  # mmdit-blocks' own count, also on meta
    assert counts.total == total
    # HunyuanVideo-13B's video branch (12.8B) plus eq. 4's text cross-attention in the 40 single blocks.
    assert 12.5e9 < video < 14.5e9 and 12e9 < audio < 14e9, (video, audio)


def test_full_preset_video_branch_is_hunyuan_13b_shaped(full_on_meta):
    """A HunyuanVideo-13B checkpoint (diffusers names, shapes on meta) is sized back to this branch."""
    config, _ = full_on_meta
    from dataclasses import replace

    t2v = replace(config.video, in_channels=16, text_cross_attention_blocks=())
    with torch.device("meta"):
        names = export_hunyuan_state_dict(MMDiTBranch(t2v), CheckpointFormat.DIFFUSERS)
    inferred = infer_hunyuan_branch_config(names)
    assert inferred == replace(t2v, attention=inferred.attention)


def test_full_preset_shard_plan_without_allocating(full_on_meta):
    _, model = full_on_meta
    state = model.state_dict()
    plan = plan_shards(state, "5GB")
    total = sum(t.numel() for t in state.values()) * 2  # bf16
    assert plan.total_size == total
    assert plan.num_shards == len(plan.file_sizes) >= math.ceil(total / GB5)
    assert all(size <= GB5 for size in plan.file_sizes)
    names = [n for _, group in plan.files for n in group]
    assert names == list(state)  # every tensor once, in state-dict order
    index = plan.index()
    assert index["metadata"]["total_size"] == total
    assert set(index["weight_map"]) == set(state)
    assert plan.files[0][0] == f"model-00001-of-{plan.num_shards:05d}.safetensors"
    # Greedy: a shard closes only when its next tensor would not fit.
    for size, (_, following) in zip(plan.file_sizes, plan.files[1:]):
        first = state[following[0]]
        assert size + first.numel() * 2 > GB5
    print(f"full preset: {total / 2**30:.1f} GiB bf16 -> {plan.num_shards} shards of <= 5GB")


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return SkyReelsV4Transformer(transformer_preset("tiny")).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shard", ["5GB", "40KB"])
def test_save_load_round_trip_is_exact(tiny_model, tmp_path, dtype, shard):
    model = tiny_model.to(dtype)
    model.save_pretrained(tmp_path / "t", max_shard_size=shard)
    sharded = (tmp_path / "t" / INDEX_NAME).exists()
    assert sharded == (shard == "40KB")
    plan = plan_shards(model.state_dict(), shard)  # the layout save_pretrained wrote
    assert sorted(p.name for p in (tmp_path / "t").glob("*.safetensors")) == sorted(f for f, _ in plan.files)
    again = SkyReelsV4Transformer.from_pretrained(tmp_path / "t")
    ours, theirs = model.state_dict(), again.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) and ours[k].dtype == theirs[k].dtype for k in ours)
    cast = SkyReelsV4Transformer.from_pretrained(tmp_path / "t", dtype=torch.float32)
    assert all(torch.equal(cast.state_dict()[k], ours[k].float()) for k in ours)


def test_truncated_and_non_finite_weights_are_typed_errors(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "t")
    path = tmp_path / "t" / WEIGHTS_NAME
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(FileFormatError, match=WEIGHTS_NAME):
        SkyReelsV4Transformer.from_pretrained(tmp_path / "t")
    with torch.no_grad():
        tiny_model.video.final_layer.proj.weight[0, 0] = float("nan")
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    from safetensors.torch import save_file

    save_file(state, str(path))  # bypasses save_pretrained's own refusal
    with pytest.raises(NonFiniteError, match="final_layer"):
        SkyReelsV4Transformer.from_pretrained(tmp_path / "t")


def test_from_pretrained_peak_memory_is_at_most_1_2x_the_weights(tmp_path):
    """A mid-size model (D 256, 61M parameters, 233 MiB fp32) loaded in a fresh process; see
    benchmarks/memory_from_pretrained.py for the `small` preset."""
    sys.path.insert(0, str(BENCHMARK.parent))
    try:
        import memory_from_pretrained
    finally:
        sys.path.remove(str(BENCHMARK.parent))
    folder = tmp_path / "t"
    memory_from_pretrained.build_folder(
        folder, preset="small", dim=256, dtype="float32", max_shard_size="100MB"
    )
    result = memory_from_pretrained.measure(tmp_path / "t")
    assert result["num_shards"] >= 2 and result["weights_bytes"] > 200 * 2**20
    assert 0.9 < result["ratio"] <= 1.2, result
