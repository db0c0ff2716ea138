"""Import reports: missing/unexpected tensors, shape and config mismatches, widening, new layers;
MLP widths that survive an export/import round trip."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from skyreels_av_rope import RotaryConfig
from skyreels_mmdit_blocks import (
    CheckpointFormat,
    DualStreamBlock,
    MMDiTBranch,
    SingleStreamBlock,
    TokenRefinerBlock,
    WeightImportError,
    detect_checkpoint_format,
    export_hunyuan_state_dict,
    infer_hunyuan_branch_config,
    joint_preset,
    load_hunyuan_video_weights,
    mlp_hidden_dim,
    read_safetensors_directory,
)


@pytest.fixture
def config(hunyuan_model, hunyuan_state_dict):
    return infer_hunyuan_branch_config(hunyuan_state_dict, config_json=dict(hunyuan_model.config))


def test_missing_tensor_is_reported_and_raises(config, hunyuan_state_dict):
    broken = dict(hunyuan_state_dict)
    del broken["transformer_blocks.1.attn.add_k_proj.bias"]
    with pytest.raises(WeightImportError, match="missing from the checkpoint") as info:
        load_hunyuan_video_weights(MMDiTBranch(config), broken)
    assert info.value.report.missing == ("transformer_blocks.1.attn.add_k_proj.bias",)
    assert info.value.report.unexpected == ()
    # Not strict: the report is returned and the other tensors load.
    branch = MMDiTBranch(config)
    report = load_hunyuan_video_weights(branch, broken, strict=False)
    assert not report.ok and report.missing == ("transformer_blocks.1.attn.add_k_proj.bias",)
    assert torch.equal(branch.final_layer.proj.weight, hunyuan_state_dict["proj_out.weight"])


def test_unexpected_tensor_is_reported_and_raises(config, hunyuan_state_dict):
    extra = {**hunyuan_state_dict, "transformer_blocks.0.attn.lora_A.weight": torch.zeros(2, 2)}
    with pytest.raises(WeightImportError, match="unexpected in the checkpoint") as info:
        load_hunyuan_video_weights(MMDiTBranch(config), extra)
    assert info.value.report.unexpected == ("transformer_blocks.0.attn.lora_A.weight",)


def test_guidance_mismatch_is_reported(config, hunyuan_state_dict):
    without = replace(config, guidance_embedding=False)
    with pytest.raises(WeightImportError) as info:
        load_hunyuan_video_weights(MMDiTBranch(without), hunyuan_state_dict)
    assert set(info.value.report.unexpected) == {
        f"time_text_embed.guidance_embedder.linear_{i}.{s}" for i in (1, 2) for s in ("weight", "bias")
    }


def test_shape_mismatch_names_the_tensor(config, hunyuan_state_dict):
    wider = replace(config, mlp_ratio=2.0)
    with pytest.raises(
        WeightImportError,
        match=r"\(128, 32\) for 'text_embed\.blocks\.0\.mlp\.fc1\.weight', but the branch has \(64, 32\)",
    ):
        load_hunyuan_video_weights(MMDiTBranch(wider), hunyuan_state_dict)


def test_config_json_disagreeing_with_the_tensors_raises(hunyuan_model, hunyuan_state_dict):
    with pytest.raises(WeightImportError, match="num_single_layers"):
        infer_hunyuan_branch_config(
            hunyuan_state_dict, config_json={**hunyuan_model.config, "num_single_layers": 3}
        )


def test_not_a_hunyuan_checkpoint():
    with pytest.raises(WeightImportError, match="not a HunyuanVideo transformer"):
        detect_checkpoint_format({"model.diffusion_model.x": torch.zeros(1)})


def test_missing_directory_and_empty_directory(tmp_path):
    with pytest.raises(WeightImportError, match="existing folder"):
        read_safetensors_directory(tmp_path / "nope")
    with pytest.raises(WeightImportError, match=r"no \.safetensors"):
        read_safetensors_directory(tmp_path)


def test_widened_patch_embed_and_new_layers_keep_the_outputs(
    config, hunyuan_state_dict, our_branch, make_inputs
):
    """Concat(V, I, M) with 4 + 4 + 1 = 9 channels and text cross-attention in every block: the output
    equals the pretrained branch's for any values in the new channels."""
    wide = MMDiTBranch(replace(config, in_channels=9, text_cross_attention_blocks=(0, 1, 2, 3))).eval()
    report = load_hunyuan_video_weights(wide, hunyuan_state_dict)
    assert report.ok and report.widened == ("patch_embed.proj.weight",)
    assert (
        len(report.kept_initialisation) == 4 * 10
    )  # 4 blocks x (norm w/b, q w/b, kv w/b, q/k norm, out w/b)
    assert all(".text_cross_attention." in n for n in report.kept_initialisation)
    inputs = make_inputs(lengths=(7, 3))
    condition = torch.randn(2, 5, *inputs.latents.shape[2:])
    with torch.no_grad():
        expected = inputs.ours(our_branch)
        inputs.latents = torch.cat([inputs.latents, condition], dim=1)
        got = inputs.ours(wide)
    assert torch.equal(got, expected)


def test_narrower_target_is_an_error(config, hunyuan_state_dict):
    with pytest.raises(WeightImportError, match="patch_embed"):
        load_hunyuan_video_weights(MMDiTBranch(replace(config, in_channels=2)), hunyuan_state_dict)


@pytest.mark.parametrize("fmt", list(CheckpointFormat))
@pytest.mark.parametrize("num_dual", [1, 0])  # MLP width read from a dual block, or from linear1
def test_mlp_width_survives_an_export_import_round_trip(fmt, num_dual):
    """dim 176, MLP 240: the ratio read back is 240/176 and 176 * (240/176) = 239.99..., which
    truncation turned into 239 (the exported checkpoint did not re-import)."""
    dim, mlp = 176, 240
    assert int(dim * (mlp / dim)) == 239 and mlp_hidden_dim(dim, mlp / dim) == mlp
    config = replace(
        joint_preset("tiny").video,
        dim=dim,
        num_heads=11,
        rope=RotaryConfig(axes_dims=(4, 6, 6)),
        text_cross_attention_blocks=(),
        num_dual_blocks=num_dual,
        num_single_blocks=1,
        mlp_ratio=mlp / dim,
    )
    branch = MMDiTBranch(config)
    widths = [b.latent_mlp.fc1.out_features for b in branch.dual_blocks]
    widths += [b.mlp_dim for b in branch.single_blocks]
    widths += [b.mlp.fc1.out_features for b in branch.text_embed.blocks]
    assert set(widths) == {mlp}
    exported = export_hunyuan_state_dict(branch, fmt)
    again = infer_hunyuan_branch_config(exported, rope=config.rope)
    assert mlp_hidden_dim(again.dim, again.mlp_ratio) == mlp
    rebuilt = MMDiTBranch(again)
    assert load_hunyuan_video_weights(rebuilt, exported).ok
    for name, value in branch.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], value), name


def test_mlp_hidden_dim_keeps_the_official_sizes_and_rejects_bad_ratios():
    assert mlp_hidden_dim(3072, 4.0) == 12288  # HunyuanVideo
    assert mlp_hidden_dim(32, 4.0) == 128
    assert mlp_hidden_dim(5, 0.5) == 3  # halves round up
    with torch.device("meta"):
        assert DualStreamBlock(dim=3072, num_heads=24).latent_mlp.fc1.out_features == 12288
        assert SingleStreamBlock(dim=3072, num_heads=24).qkv_mlp_in.out_features == 3 * 3072 + 12288
        assert TokenRefinerBlock(dim=3072, num_heads=24).mlp.fc1.out_features == 12288
    with pytest.raises(ValueError, match="mlp_ratio must be a positive number; got 0"):
        mlp_hidden_dim(32, 0)
    with pytest.raises(ValueError, match="gives no MLP hidden unit for dim 32"):
        mlp_hidden_dim(32, 0.01)
