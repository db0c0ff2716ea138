"""Finiteness checks of the joint transformer's inputs (issue 14), switched by
``skyreels_attention``'s finite-check mode."""

from __future__ import annotations

import pytest
import torch

from skyreels_attention import FiniteChecks, NonFiniteInputError, finite_checks
from skyreels_mmdit_blocks import JointAudioVideoTransformer, joint_preset


def _inputs():
    g = torch.Generator().manual_seed(0)
    return {
        "video_latents": torch.randn(1, 9, 2, 4, 4, generator=g),
        "audio_latents": torch.randn(1, 16, 8, generator=g),
        "timestep": torch.tensor([700.0]),
        "text_tokens": torch.randn(1, 5, 32, generator=g),
        "audio_reference_latents": torch.randn(1, 16, 3, generator=g),
    }


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return JointAudioVideoTransformer(joint_preset("tiny")).eval()


@pytest.mark.parametrize(
    ("argument", "index", "bad", "message"),
    [
        ("video_latents", (0, 3, 1, 2, 2), float("nan"), "video branch: video_latents"),
        ("audio_latents", (0, 0, 5), float("inf"), "audio branch: audio_latents"),
        ("timestep", (0,), float("nan"), "video branch: timestep"),
        ("text_tokens", (0, 4, 31), -float("inf"), "video branch: text_tokens"),
        ("audio_reference_latents", (0, 2, 1), float("nan"), "audio branch: reference_latents"),
        ("audio_timestep", (0,), float("inf"), "audio branch: timestep"),
    ],
)
def test_nonfinite_inputs_raise_naming_the_argument(model, argument, index, bad, message):
    inputs = _inputs()
    if argument == "audio_timestep":
        inputs["audio_timestep"] = torch.tensor([500.0])
    inputs[argument][index] = bad
    with torch.no_grad(), pytest.raises(NonFiniteInputError, match=rf"^{message}: expected finite values"):
        model(**inputs)


def test_finite_inputs_pass_and_off_lets_nan_through(model):
    with torch.no_grad():
        out = model(**_inputs())
        assert torch.isfinite(out.video).all() and torch.isfinite(out.audio).all()
        inputs = _inputs()
        inputs["text_tokens"][0, 0, 0] = float("nan")
        with finite_checks(FiniteChecks.OFF):
            model(**inputs)  # unchecked: no error (the NaN may or may not reach the zero-init outputs)
