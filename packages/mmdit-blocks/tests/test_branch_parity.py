"""Our video branch reproduces diffusers' HunyuanVideoTransformer3DModel from its weights."""

from __future__ import annotations

import pytest
import torch

TOL = 1e-5


@pytest.mark.parametrize(
    ("shape", "lengths"),
    [
        ((2, 4, 4), (7, 7)),  # full text, square grid
        ((2, 4, 4), (7, 3)),  # padded text mask
        ((3, 6, 10), (5, 2)),  # odd, non-square post-patch grid 3 x 3 x 5 with padding
    ],
)
def test_video_branch_matches_diffusers(hunyuan_model, our_branch, make_inputs, shape, lengths):
    inputs = make_inputs(shape=shape, lengths=lengths)
    with torch.no_grad():
        expected = inputs.diffusers(hunyuan_model)
        got = inputs.ours(our_branch)
    assert got.shape == expected.shape == inputs.latents.shape
    assert expected.abs().max() > 0.1  # a meaningful output, not zeros
    assert (got - expected).abs().max().item() <= TOL


def test_padding_changes_the_output(hunyuan_model, our_branch, make_inputs):
    """The mask matters (so the padded-mask parity above is not vacuous)."""
    full, padded = make_inputs(lengths=(7, 7)), make_inputs(lengths=(7, 3))
    with torch.no_grad():
        a, b = full.ours(our_branch), padded.ours(our_branch)
    assert torch.equal(a[0], b[0])
    assert (a[1] - b[1]).abs().max() > 1e-3


def test_padded_text_values_are_ignored(our_branch, make_inputs):
    """Whatever the padded text positions hold, the video output is the same."""
    inputs = make_inputs(lengths=(7, 3))
    with torch.no_grad():
        before = inputs.ours(our_branch)
        inputs.text[1, 3:] = 100.0 * torch.randn(4, 24)
        after = inputs.ours(our_branch)
    assert (before - after).abs().max().item() <= TOL


def test_gradients_match_diffusers(hunyuan_model, our_branch, make_inputs):
    inputs = make_inputs(shape=(2, 4, 4), lengths=(7, 5))
    x_ref = inputs.latents.clone().requires_grad_(True)
    x_our = inputs.latents.clone().requires_grad_(True)
    weight = torch.randn(inputs.latents.shape, generator=torch.Generator().manual_seed(3))
    hunyuan_model.zero_grad()
    (
        inputs.__class__(**{**inputs.__dict__, "latents": x_ref}).diffusers(hunyuan_model) * weight
    ).sum().backward()
    (inputs.__class__(**{**inputs.__dict__, "latents": x_our}).ours(our_branch) * weight).sum().backward()
    assert (x_ref.grad - x_our.grad).abs().max().item() <= 1e-4
    theirs = hunyuan_model.single_transformer_blocks[1].proj_out.weight.grad
    ours = our_branch.single_blocks[1].attn_mlp_out.weight.grad
    assert theirs.abs().max() > 0
    assert (theirs - ours).abs().max().item() <= 1e-4
    hunyuan_model.zero_grad()
