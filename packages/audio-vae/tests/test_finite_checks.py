"""Finiteness checks of the audio VAE's encode/decode inputs (issue 14)."""

from __future__ import annotations

import pytest
import torch

from skyreels_audio_vae import AudioVAE, FiniteChecks, NonFiniteInputError, finite_checks


def test_nonfinite_waveform_and_latents_raise_naming_the_argument(micro_config):
    vae = AudioVAE(micro_config()).eval()
    wave = torch.zeros(1, 1, 2048)
    wave[0, 0, 100] = float("nan")
    with torch.no_grad():
        with pytest.raises(NonFiniteInputError, match=r"^waveform: expected finite values, got 1 NaN"):
            vae.encode(wave)
        with pytest.raises(NonFiniteInputError, match=r"^waveform"):
            vae(wave)
        latents = torch.zeros(1, 4, 2)
        latents[0, 3, 1] = float("inf")
        with pytest.raises(
            NonFiniteInputError, match=r"^latents: expected finite values, got 0 NaN and 1 inf"
        ):
            vae.decode(latents)
        with pytest.raises(NonFiniteInputError, match=r"^latents"):
            vae.decode_normalized(latents)


def test_finite_inputs_pass_and_off_lets_nan_through(micro_config):
    vae = AudioVAE(micro_config()).eval()
    wave = torch.randn(1, 1, 2048) * 0.1
    with torch.no_grad():
        latents = vae.encode(wave).mode()
        assert torch.isfinite(vae.decode(latents)).all()
        with finite_checks(FiniteChecks.OFF):
            out = vae.decode(torch.full_like(latents, float("nan")))
    assert torch.isnan(out).any()


def test_meta_and_fake_tensors_are_not_read():
    # Shape planning and FLOP counting run on meta / fake tensors, which hold no values to check.
    from torch._subclasses.fake_tensor import FakeTensorMode

    from skyreels_audio_vae import FiniteChecks as Mode
    from skyreels_audio_vae import check_finite as check
    from skyreels_audio_vae import finite_checks as mode_block

    with mode_block(Mode.ALWAYS):
        check(torch.empty(4, device="meta"), "meta")
        with FakeTensorMode() as fake_mode:
            check(fake_mode.from_tensor(torch.full((4,), float("nan"))), "fake")
        with pytest.raises(ValueError, match="real"):
            check(torch.full((4,), float("nan")), "real")
