"""The tiny joint transformer and inputs shared by the sequence-parallel and data x sequence parallel
tests (test_scale_sequence_parallel.py, test_scale_dp_sp.py), and a tiny refiner built from it
(test_scale_parallelize.py too); a plain module so that their spawned
worker processes import it too.
"""

from __future__ import annotations

import dataclasses

import torch

from skyreels_mmdit_blocks import JointAudioVideoTransformer, joint_preset


def make_model(**config_changes: object) -> JointAudioVideoTransformer:
    """The seeded tiny preset (with ``config_changes``) with every zero-initialised tensor redrawn."""
    torch.manual_seed(0)
    model = JointAudioVideoTransformer(dataclasses.replace(joint_preset("tiny"), **config_changes))
    with torch.no_grad():  # zero-initialised exchanges / cross-attentions would hide errors in eq. 4-5
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.05)
    return model


def make_inputs(config) -> dict:
    """A batch of 2: 9 generated video tokens (3·1·3) + 4 reference tokens, 11 audio frames + 3
    reference frames, padded text."""
    g = torch.Generator().manual_seed(1)
    c_v, c_a = config.video.in_channels, config.audio.in_channels
    return {
        "video_latents": torch.randn(2, c_v, 3, 2, 6, generator=g),
        "audio_latents": torch.randn(2, c_a, 11, generator=g),
        "timestep": torch.tensor([300.0, 700.0]),
        "text_tokens": torch.randn(2, 5, config.video.text_dim, generator=g),
        "text_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
        "video_reference_latents": torch.randn(2, c_v, 1, 4, 4, generator=g),
        "audio_reference_latents": torch.randn(2, c_a, 3, generator=g),
    }


def refiner_reference():
    """A tiny refiner (``VideoRefiner``) from the fixture's base model, every weight non-zero."""
    from skyreels_refiner_vsa import VSAConfig, refiner_from_base

    base = make_model()
    torch.manual_seed(6)
    reference = refiner_from_base(base.video, vsa=VSAConfig(sparsity=0.5, cube=(1, 4, 4), backend="torch"))
    with torch.no_grad():  # the widened patch embedding and the gates start at zero
        for p in reference.parameters():
            if not p.any():
                p.normal_(std=0.05)
    return reference


def refiner_inputs(config, key_mask: bool) -> tuple[dict, torch.Tensor]:
    """Inputs of batch 2 (grid 2 x 4 x 8 plus 3 reference tokens) and a target."""
    g = torch.Generator().manual_seed(4)
    channels = config.branch.in_channels
    inputs = {
        "refiner_input": torch.randn(2, channels, 2, 8, 16, generator=g),
        "timestep": torch.tensor([250.0, 800.0]),
        "text_tokens": torch.randn(2, 5, config.branch.text_dim, generator=g),
        "text_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
        "reference_latents": torch.randn(2, channels, 1, 2, 6, generator=g),
    }
    if key_mask:
        keys = torch.ones(2, 67, dtype=torch.bool)
        keys[1, 2] = False
        inputs["latent_key_mask"] = keys
    return inputs, torch.randn(2, config.branch.out_channels, 2, 8, 16, generator=g)
