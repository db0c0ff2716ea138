"""Official-format HunyuanVideo checkpoints load to the same outputs; export and directory loading."""

from __future__ import annotations

import json
import re

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_hunyuan_video_transformer_to_diffusers
from safetensors.torch import save_file

from skyreels_av_rope import RotaryConfig
from skyreels_mmdit_blocks import (
    CheckpointFormat,
    MMDiTBranch,
    WeightImportError,
    build_video_branch_from_hunyuan,
    detect_checkpoint_format,
    export_hunyuan_state_dict,
    infer_hunyuan_branch_config,
    load_hunyuan_video_weights,
)

_RENAMES = [  # diffusers -> official prefixes outside the blocks (the official repository's names)
    (r"^x_embedder\.", "img_in."),
    (r"^time_text_embed\.timestep_embedder\.linear_1\.", "time_in.mlp.0."),
    (r"^time_text_embed\.timestep_embedder\.linear_2\.", "time_in.mlp.2."),
    (r"^time_text_embed\.guidance_embedder\.linear_1\.", "guidance_in.mlp.0."),
    (r"^time_text_embed\.guidance_embedder\.linear_2\.", "guidance_in.mlp.2."),
    (r"^time_text_embed\.text_embedder\.linear_1\.", "vector_in.in_layer."),
    (r"^time_text_embed\.text_embedder\.linear_2\.", "vector_in.out_layer."),
    (r"^context_embedder\.proj_in\.", "txt_in.input_embedder."),
    (r"^context_embedder\.time_text_embed\.text_embedder\.", "txt_in.c_embedder."),
    (r"^proj_out\.", "final_layer.linear."),
]


def to_official(diffusers_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers HunyuanVideoTransformer3DModel names -> official repository names (test-side, by hand)."""
    sd = dict(diffusers_sd)
    out: dict[str, torch.Tensor] = {}

    def fuse(prefix: str, parts: list[str], target: str) -> None:
        for suffix in ("weight", "bias"):
            out[f"{target}.{suffix}"] = torch.cat([sd.pop(f"{prefix}{p}.{suffix}") for p in parts], dim=0)

    for i in sorted({int(m.group(1)) for k in sd if (m := re.match(r"transformer_blocks\.(\d+)\.", k))}):
        d, o = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        fuse(d, ["attn.to_q", "attn.to_k", "attn.to_v"], o + "img_attn_qkv")
        fuse(d, ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"], o + "txt_attn_qkv")
        names = {
            "norm1.linear": "img_mod.linear", "norm1_context.linear": "txt_mod.linear",
            "attn.norm_q": "img_attn_q_norm", "attn.norm_k": "img_attn_k_norm",
            "attn.norm_added_q": "txt_attn_q_norm", "attn.norm_added_k": "txt_attn_k_norm",
            "attn.to_out.0": "img_attn_proj", "attn.to_add_out": "txt_attn_proj",
            "ff.net.0.proj": "img_mlp.fc1", "ff.net.2": "img_mlp.fc2",
            "ff_context.net.0.proj": "txt_mlp.fc1", "ff_context.net.2": "txt_mlp.fc2",
        }  # fmt: skip
        for key in [k for k in sd if k.startswith(d)]:
            module, suffix = key[len(d) :].rsplit(".", 1)
            out[f"{o}{names[module]}.{suffix}"] = sd.pop(key)
    for i in sorted(
        {int(m.group(1)) for k in sd if (m := re.match(r"single_transformer_blocks\.(\d+)\.", k))}
    ):
        d, o = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        fuse(d, ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"], o + "linear1")
        names = {"norm.linear": "modulation.linear", "attn.norm_q": "q_norm", "attn.norm_k": "k_norm",
                 "proj_out": "linear2"}  # fmt: skip
        for key in [k for k in sd if k.startswith(d)]:
            module, suffix = key[len(d) :].rsplit(".", 1)
            out[f"{o}{names[module]}.{suffix}"] = sd.pop(key)
    for i in sorted(
        {
            int(m.group(1))
            for k in sd
            if (m := re.match(r"context_embedder\.token_refiner\.refiner_blocks\.(\d+)\.", k))
        }
    ):
        d, o = (
            f"context_embedder.token_refiner.refiner_blocks.{i}.",
            f"txt_in.individual_token_refiner.blocks.{i}.",
        )
        fuse(d, ["attn.to_q", "attn.to_k", "attn.to_v"], o + "self_attn_qkv")
        names = {
            "norm1": "norm1",
            "norm2": "norm2",
            "attn.to_out.0": "self_attn_proj",
            "ff.net.0.proj": "mlp.fc1",
            "ff.net.2": "mlp.fc2",
            "norm_out.linear": "adaLN_modulation.1",
        }
        for key in [k for k in sd if k.startswith(d)]:
            module, suffix = key[len(d) :].rsplit(".", 1)
            out[f"{o}{names[module]}.{suffix}"] = sd.pop(key)
    for suffix in ("weight", "bias"):
        scale, shift = sd.pop(f"norm_out.linear.{suffix}").chunk(2, dim=0)  # diffusers: (scale, shift)
        out[f"final_layer.adaLN_modulation.1.{suffix}"] = torch.cat([shift, scale], dim=0)
        for n in (1, 2):
            out[f"txt_in.t_embedder.mlp.{2 * n - 2}.{suffix}"] = sd.pop(
                f"context_embedder.time_text_embed.timestep_embedder.linear_{n}.{suffix}"
            )
    for key in list(sd):
        for pattern, replacement in _RENAMES:
            if re.match(pattern, key):
                out[re.sub(pattern, replacement, key)] = sd.pop(key)
                break
    assert not sd, f"unconverted: {sorted(sd)}"
    return out


def test_test_converter_agrees_with_diffusers(hunyuan_state_dict):
    """diffusers' own official->diffusers converter inverts ours (its single-block split assumes D=3072,
    so the single-block linear1 tensors are left out of this check; the output parity covers them)."""
    official = to_official(hunyuan_state_dict)
    kept = {k: v.clone() for k, v in official.items() if not re.match(r"single_blocks\.\d+\.linear1\.", k)}
    back = convert_hunyuan_video_transformer_to_diffusers(kept)
    expected = {
        k: v
        for k, v in hunyuan_state_dict.items()
        if not re.match(r"single_transformer_blocks\.\d+\.(attn\.to_[qkv]|proj_mlp)\.", k)
    }
    assert set(back) == set(expected)
    for key, value in expected.items():
        assert torch.equal(back[key], value), key


def test_official_checkpoint_gives_the_same_outputs(hunyuan_model, hunyuan_state_dict, make_inputs):
    official = to_official(hunyuan_state_dict)
    assert detect_checkpoint_format(official) is CheckpointFormat.OFFICIAL
    with pytest.raises(WeightImportError, match="pass rope="):
        infer_hunyuan_branch_config(official)  # head dim 16: no default RoPE split, no config.json
    # No config.json: every size comes from the shapes; only the RoPE split must be given.
    config = infer_hunyuan_branch_config(official, rope=RotaryConfig(axes_dims=(4, 6, 6), theta=256.0))
    assert (config.dim, config.num_heads, config.num_dual_blocks, config.num_single_blocks) == (32, 2, 2, 2)
    assert (config.mlp_ratio, config.text_dim, config.pooled_text_dim, config.guidance_embedding) == (
        4.0,
        24,
        12,
        True,
    )
    branch = MMDiTBranch(config).eval()
    report = load_hunyuan_video_weights(branch, official)
    assert report.ok and report.source_format is CheckpointFormat.OFFICIAL
    assert len(report.loaded) == len(dict(branch.named_parameters()))
    inputs = make_inputs(shape=(3, 6, 10), lengths=(7, 4))
    with torch.no_grad():
        assert (inputs.ours(branch) - inputs.diffusers(hunyuan_model)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("fmt", list(CheckpointFormat))
def test_export_inverts_the_import(our_branch, hunyuan_state_dict, fmt):
    exported = export_hunyuan_state_dict(our_branch, fmt)
    expected = hunyuan_state_dict if fmt is CheckpointFormat.DIFFUSERS else to_official(hunyuan_state_dict)
    assert set(exported) == set(expected)
    for key, value in expected.items():
        assert torch.equal(exported[key], value), key


def test_build_from_a_safetensors_directory(tmp_path, hunyuan_model, hunyuan_state_dict, make_inputs):
    shards = sorted(hunyuan_state_dict)
    half = len(shards) // 2
    save_file({k: hunyuan_state_dict[k].contiguous() for k in shards[:half]}, tmp_path / "part-1.safetensors")
    save_file({k: hunyuan_state_dict[k].contiguous() for k in shards[half:]}, tmp_path / "part-2.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(dict(hunyuan_model.config)))
    branch, report = build_video_branch_from_hunyuan(tmp_path)
    assert report.ok and report.source_format is CheckpointFormat.DIFFUSERS
    inputs = make_inputs(lengths=(7, 2))
    with torch.no_grad():
        assert (inputs.ours(branch.eval()) - inputs.diffusers(hunyuan_model)).abs().max().item() <= 1e-5
