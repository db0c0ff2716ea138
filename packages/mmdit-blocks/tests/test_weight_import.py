"""Import reports: missing/unexpected tensors, shape and config mismatches, widening, new layers."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from skyreels_mmdit_blocks import (
    MMDiTBranch,
    WeightImportError,
    detect_checkpoint_format,
    infer_hunyuan_branch_config,
    load_hunyuan_video_weights,
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
