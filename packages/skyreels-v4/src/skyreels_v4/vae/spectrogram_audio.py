"""A zero-training, phase-free audio codec: companded STFT magnitudes, decoded by fast Griffin-Lim.

The stand-in for the paper's audio VAE (section 3.1) when none is at hand, chosen so that the latents a
flow model regresses are *learnable*. A signed, linear codec (``FrameAudioCodec``, framed DCT) gives a
blip whose coefficients flip sign with its sub-frame onset: the mean of such latents over a few
milliseconds of timing uncertainty is silence, and the x0 / velocity regression of a young model sits
at that mean. Magnitudes do not depend on the phase, so their conditional mean is a slightly blurred
blip at the right pitch and place, which decodes to one. docs/decisions/0012-spectrogram-audio-codec.md
has the measurements.

Shape legend: B batch, ch channels, F = n_fft // 2 + 1 frequency bins, L latents, H hop, S = L * H.

Latents are ``[B, ch * F, L]``; channel ``c * F + f`` holds bin ``f`` of audio channel ``c``:
``((|STFT|[f, l] / latent_scale) ** compression)``, with a periodic Hann window of ``n_fft`` samples,
frame ``l`` centred at sample ``l * H`` (zero padding outside the clip). Decoding takes negative
latents to 0, inverts the companding, repeats the last frame for the window centred at the clip's end
and recovers a phase by ``griffin_lim_iters`` iterations of fast
Griffin-Lim (momentum ``griffin_lim_momentum``) from a fixed pseudo-random start, so decoding is
deterministic. The decode is not exact: the phase of the input is lost (only its magnitude spectrogram
is kept), which for the sparse tones of the procedural world changes neither their onsets nor their
pitch (``tests/test_vae_spectrogram_audio.py`` scores the round trip with the project's metrics).

Defaults: 16 kHz mono, hop 256 (62.5 latents/s), ``n_fft`` 512 (257 bins), ``compression`` 1/3 and
``latent_scale`` 0.1: world audio then has latents of mean square about 0.11 (that of the DCT codec's
companded latents) with blips peaking near 5 and silence at 0.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor

from skyreels_v4.vae.audio_codec import AudioCodecBase, check_codec_settings

__all__ = ["SpectrogramAudioCodec", "griffin_lim"]

_PHASE_SEED = 0


def _stft(waveform: Tensor, window: Tensor, hop: int, num_frames: int) -> Tensor:
    """Complex STFT ``[N, F, num_frames]`` of ``[N, S]`` (frame ``l`` centred at ``l * hop``)."""
    spectrum = torch.stft(
        waveform,
        n_fft=window.numel(),
        hop_length=hop,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return spectrum[..., :num_frames]


def _istft(spectrum: Tensor, window: Tensor, hop: int, length: int) -> Tensor:
    return torch.istft(
        spectrum, n_fft=window.numel(), hop_length=hop, window=window, center=True, length=length
    )


def griffin_lim(
    magnitude: Tensor,
    *,
    n_fft: int,
    hop_length: int,
    num_samples: int,
    iterations: int = 32,
    momentum: float = 0.99,
    seed: int = _PHASE_SEED,
    initial_phase: Tensor | None = None,
) -> Tensor:
    """A waveform ``[N, num_samples]`` whose STFT magnitude approximates ``magnitude [N, F, L]``.

    Fast Griffin-Lim (Perraudin, Balazs and Søndergaard, 2013): alternate between the set of spectra
    with the given magnitude and the set of consistent spectra (those of some waveform), extrapolating
    each consistent estimate by ``momentum`` towards where the iteration is heading. The start phase is
    ``initial_phase`` (unit complex numbers shaped like ``magnitude``) or else drawn from a generator
    seeded with ``seed`` on the CPU, so the result does not depend on the global random state.
    Computed in the dtype of ``magnitude``; periodic Hann window, frames centred at ``l * hop_length``.
    """
    if magnitude.ndim != 3:
        raise ValueError(f"magnitude: expected [N, F, L], got shape {tuple(magnitude.shape)}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations: expected an int >= 0, got {iterations!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum: expected a number in [0, 1), got {momentum!r}")
    if initial_phase is None:
        turns = torch.rand(
            magnitude.shape, generator=torch.Generator().manual_seed(seed), dtype=magnitude.dtype
        )
        phase = torch.polar(torch.ones_like(turns), 2 * math.pi * turns).to(magnitude.device)
    elif initial_phase.shape != magnitude.shape or not initial_phase.is_complex():
        raise ValueError(
            f"initial_phase: expected a complex tensor of shape {tuple(magnitude.shape)}, got "
            f"{initial_phase.dtype} {tuple(initial_phase.shape)}"
        )
    else:
        phase = initial_phase.to(magnitude.device)
    window = torch.hann_window(n_fft, dtype=magnitude.dtype, device=magnitude.device)
    num_frames = magnitude.shape[-1]
    previous = torch.zeros_like(phase)
    for _ in range(iterations):
        waveform = _istft(magnitude * phase, window, hop_length, num_samples)
        consistent = _stft(waveform, window, hop_length, num_frames)
        heading = consistent - (momentum / (1 + momentum)) * previous
        phase = heading / heading.abs().clamp_min(1e-16)
        previous = consistent
    return _istft(magnitude * phase, window, hop_length, num_samples)


class SpectrogramAudioCodec(AudioCodecBase):
    """Companded STFT magnitudes, Griffin-Lim decode (module docstring)."""

    class_name = "SpectrogramAudioCodec"
    settings = (
        "sample_rate",
        "audio_channels",
        "hop_length",
        "n_fft",
        "latent_scale",
        "compression",
        "griffin_lim_iters",
        "griffin_lim_momentum",
    )

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        audio_channels: int = 1,
        hop_length: int = 256,
        n_fft: int = 512,
        latent_scale: float = 0.1,
        compression: float = 1 / 3,
        griffin_lim_iters: int = 32,
        griffin_lim_momentum: float = 0.99,
    ) -> None:
        super().__init__()
        check_codec_settings(
            sample_rate=sample_rate,
            audio_channels=audio_channels,
            hop_length=hop_length,
            n_fft=n_fft,
            latent_scale=latent_scale,
            compression=compression,
        )
        if n_fft < 2 * hop_length or n_fft % 2:
            raise ValueError(
                f"n_fft: expected an even number >= 2 * hop_length ({2 * hop_length}; the Hann windows "
                f"must overlap for the inverse STFT), got {n_fft}"
            )
        if (
            isinstance(griffin_lim_iters, bool)
            or not isinstance(griffin_lim_iters, int)
            or griffin_lim_iters < 0
        ):
            raise ValueError(f"griffin_lim_iters: expected an int >= 0, got {griffin_lim_iters!r}")
        if (
            isinstance(griffin_lim_momentum, bool)
            or not isinstance(griffin_lim_momentum, (int, float))
            or not 0 <= griffin_lim_momentum < 1
        ):
            raise ValueError(
                f"griffin_lim_momentum: expected a number in [0, 1), got {griffin_lim_momentum!r}"
            )
        self.sample_rate = sample_rate
        self.audio_channels = audio_channels
        self.hop_length = hop_length
        self.n_fft = n_fft
        self.num_bins = n_fft // 2 + 1
        self.latent_channels = audio_channels * self.num_bins
        self.latent_scale = float(latent_scale)
        self.compression = float(compression)
        self.griffin_lim_iters = griffin_lim_iters
        self.griffin_lim_momentum = float(griffin_lim_momentum)

    def magnitudes(self, waveform: Tensor) -> Tensor:
        """Float64 STFT magnitudes ``[B, ch, F, L]`` of a prepared ``[B, ch, L * hop]`` waveform."""
        b, ch, samples = waveform.shape
        window = torch.hann_window(self.n_fft, dtype=torch.float64, device=waveform.device)
        spectrum = _stft(
            waveform.to(torch.float64).reshape(b * ch, samples),
            window,
            self.hop_length,
            samples // self.hop_length,
        )
        return spectrum.abs().reshape(b, ch, self.num_bins, -1)

    def _encode_prepared(self, waveform: Tensor) -> Tensor:
        latents = (self.magnitudes(waveform) / self.latent_scale).pow(self.compression)
        return rearrange(latents, "b c f l -> b (c f) l").to(waveform.dtype)

    def _decode_latents(self, latents: Tensor) -> Tensor:
        companded = rearrange(latents.to(torch.float64), "b (c f) l -> (b c) f l", f=self.num_bins)
        magnitude = companded.clamp_min(0).pow(1.0 / self.compression) * self.latent_scale
        # The frame centred at the clip's end (encode drops it, keeping one latent per hop): without
        # it the last samples are covered by one window tail alone, where the inverse STFT divides by
        # a window sum near zero. Repeating the last frame's magnitude stands in for it.
        magnitude = torch.cat([magnitude, magnitude[..., -1:]], dim=-1)
        waveform = griffin_lim(
            magnitude,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            num_samples=latents.shape[-1] * self.hop_length,
            iterations=self.griffin_lim_iters,
            momentum=self.griffin_lim_momentum,
        )
        return rearrange(waveform, "(b c) s -> b c s", c=self.audio_channels).to(latents.dtype)
