"""The VSA option of the base model's video self-attention (skyreels_v4.model.video_sparse)."""

from __future__ import annotations

import json

import pytest
import torch

from skyreels_mmdit_blocks import JointAudioVideoTransformer
from skyreels_refiner_vsa import VSAConfig
from skyreels_v4.model import (
    SkyReelsV4Transformer,
    VideoSelfAttention,
    VideoSelfAttentionConfig,
    enable_video_sparse_attention,
    transformer_preset,
)


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _inputs(grid=(4, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(2, 9, *grid, generator=g)
    audio = torch.randn(2, 16, 11, generator=g)
    text = torch.randn(2, 6, 32, generator=g)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    return video, audio, dict(timestep=torch.tensor([900.0, 300.0]), text_tokens=text, text_mask=mask)


def _randomized(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def _vsa_model(vsa: VSAConfig, seed=0):
    torch.manual_seed(seed)
    return SkyReelsV4Transformer(
        transformer_preset("tiny"),
        video_attention=VideoSelfAttentionConfig(kind=VideoSelfAttention.VSA, vsa=vsa),
    ).eval()


def test_dense_default_is_the_unchanged_code_bit_for_bit():
    torch.manual_seed(0)
    plain = _randomized(JointAudioVideoTransformer(transformer_preset("tiny"))).eval()
    ours = SkyReelsV4Transformer(transformer_preset("tiny")).eval()
    ours.load_state_dict(plain.state_dict())
    assert ours.video_attention.kind is VideoSelfAttention.DENSE
    assert not hasattr(ours, "video_vsa")
    video, audio, kw = _inputs()
    with torch.no_grad():
        a, b = plain(video, audio, **kw), ours(video, audio, **kw)
    assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio)


def test_vsa_keeping_every_block_with_zero_gates_equals_dense():
    dense = SkyReelsV4Transformer(transformer_preset("tiny")).eval()
    _randomized(dense)
    sparse = _vsa_model(VSAConfig(sparsity=0.0, backend="torch"))
    missing, unexpected = sparse.load_state_dict(dense.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith("video_vsa.") for k in missing) and missing
    assert all(p.abs().max() == 0 for p in sparse.video_vsa.parameters())  # zero gates
    video, audio, kw = _inputs()
    with torch.no_grad():
        a, b = dense(video, audio, **kw), sparse(video, audio, **kw)
    assert torch.allclose(a.video, b.video, atol=2e-5, rtol=0), (a.video - b.video).abs().max()
    assert torch.equal(a.audio, b.audio) or torch.allclose(a.audio, b.audio, atol=2e-5, rtol=0)


def test_vsa_sparsity_changes_the_output_and_the_gate_matters():
    dense = _randomized(SkyReelsV4Transformer(transformer_preset("tiny")).eval())
    sparse = _vsa_model(VSAConfig(sparsity=0.75, backend="torch"))
    sparse.load_state_dict(dense.state_dict(), strict=False)
    video, audio, kw = _inputs(grid=(8, 16, 16))  # 8 x 8 x 8 tokens = 8 cubes, 2 kept per query cube
    with torch.no_grad():
        a, b = dense(video, audio, **kw).video, sparse(video, audio, **kw).video
        assert torch.isfinite(b).all() and (a - b).abs().max() > 1e-3
        sparse.video_vsa[0].gate.bias.fill_(0.5)
        c = sparse(video, audio, **kw).video
    assert (c - b).abs().max() > 1e-4


def test_vsa_folder_round_trip(tmp_path):
    model = _vsa_model(VSAConfig(sparsity=0.5, backend="torch"))
    with torch.no_grad():
        model.video_vsa[1].gate.weight.normal_()
    model.save_pretrained(tmp_path / "t")
    data = json.loads((tmp_path / "t" / "config.json").read_text())
    assert data["video_attention"]["kind"] == "vsa" and data["video_attention"]["vsa"]["sparsity"] == 0.5
    again = SkyReelsV4Transformer.from_pretrained(tmp_path / "t")
    assert again.video_attention == model.video_attention
    assert torch.equal(again.video_vsa[1].gate.weight, model.video_vsa[1].gate.weight)
    video, audio, kw = _inputs(grid=(2, 4, 6))
    with torch.no_grad():
        assert torch.equal(model(video, audio, **kw).video, again(video, audio, **kw).video)
    dense = SkyReelsV4Transformer(transformer_preset("tiny"))
    dense.save_pretrained(tmp_path / "d")
    assert "video_attention" not in json.loads((tmp_path / "d" / "config.json").read_text())


def test_bad_options_are_typed_errors():
    with pytest.raises(TypeError, match="kind"):
        VideoSelfAttentionConfig(kind="vsa")
    with pytest.raises(ValueError, match="vsa: only used"):
        VideoSelfAttentionConfig(vsa=VSAConfig())
    assert VideoSelfAttentionConfig(kind=VideoSelfAttention.VSA).vsa == VSAConfig()
    with pytest.raises(TypeError, match="video_attention"):
        SkyReelsV4Transformer(transformer_preset("tiny"), video_attention="vsa")
    model = _vsa_model(VSAConfig(sparsity=0.5, backend="torch"))
    with pytest.raises(ValueError, match="already enabled"):
        enable_video_sparse_attention(model, VSAConfig())
    with pytest.raises(TypeError, match="config"):
        enable_video_sparse_attention(SkyReelsV4Transformer(transformer_preset("tiny")), {"sparsity": 0.5})
