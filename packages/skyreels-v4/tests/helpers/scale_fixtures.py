"""The tiny joint transformer and inputs shared by the sequence-parallel and data x sequence parallel
tests (test_scale_sequence_parallel.py, test_scale_dp_sp.py); a plain module so that their spawned
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
