"""Sample-rate and channel conversion at the audio codec boundary (paper section 3.1 audio VAE runs at
one rate and channel count; inputs come at any).

Resampling uses libsoxr (``soxr``, high quality, linear phase) on the CPU in float64; the output has
``round(S * target_rate / orig_rate)`` samples (soxr's own length rule). Channels: mono is duplicated
to every output channel; several channels are averaged down to mono; other conversions are refused.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["convert_channels", "resample_waveform"]


def _positive_rate(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: expected a positive int sample rate in Hz, got {value!r}")
    return value


def resample_waveform(waveform: Tensor, orig_rate: int, target_rate: int, *, quality: str = "HQ") -> Tensor:
    """``[B, ch, S]`` at ``orig_rate`` -> ``[B, ch, round(S * target / orig)]`` at ``target_rate``, same
    dtype and device. Not differentiable (goes through NumPy); a no-op when the rates are equal."""
    import soxr

    orig_rate, target_rate = (
        _positive_rate("orig_rate", orig_rate),
        _positive_rate("target_rate", target_rate),
    )
    if not isinstance(waveform, Tensor) or waveform.ndim != 3:
        shape = tuple(waveform.shape) if isinstance(waveform, Tensor) else type(waveform).__name__
        raise ValueError(f"waveform: expected [B, channels, samples], got {shape}")
    if orig_rate == target_rate:
        return waveform
    array = waveform.detach().to("cpu", torch.float64).numpy()
    out = [
        soxr.resample(np.ascontiguousarray(item.T), orig_rate, target_rate, quality=quality).T
        for item in array
    ]
    return torch.from_numpy(np.stack(out)).to(device=waveform.device, dtype=waveform.dtype)


def convert_channels(waveform: Tensor, channels: int) -> Tensor:
    """``[B, c, S]`` -> ``[B, channels, S]``: unchanged, mono duplicated, or averaged to mono."""
    have = int(waveform.shape[1])
    if have == channels:
        return waveform
    if have == 1:
        return waveform.expand(-1, channels, -1).contiguous()
    if channels == 1:
        return waveform.mean(dim=1, keepdim=True)
    raise ValueError(
        f"waveform: expected 1 or {channels} channels (or any count for a mono codec), got {have} channels"
    )
