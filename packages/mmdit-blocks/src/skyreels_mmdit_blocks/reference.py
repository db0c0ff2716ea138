"""Plain float64 references for the layers HunyuanVideo does not have (tests compare against these).

Written for reading, not speed: explicit softmax, RoPE as complex multiplication, no fused
projections or shared helpers from the optimised modules. The HunyuanVideo parts (blocks, refiner,
embeddings) are checked against diffusers' public implementation instead.
"""

from __future__ import annotations

import torch

from skyreels_mmdit_blocks.av_cross_attention import (
    AudioVideoCrossAttention,
    AVExchangeOrder,
    CrossModalAttention,
)
from skyreels_mmdit_blocks.text_cross_attention import TextCrossAttention

__all__ = [
    "reference_av_exchange",
    "reference_cross_modal_attention",
    "reference_softmax_attention",
    "reference_text_cross_attention",
]


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float64)


def _linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return x @ _f64(layer.weight).T + _f64(layer.bias)


def _layer_norm(x: torch.Tensor, layer: torch.nn.LayerNorm) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + layer.eps) * _f64(layer.weight) + _f64(layer.bias)


def _rms(x: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x**2).mean(-1, keepdim=True) + eps) * _f64(gain)


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, l, d = x.shape
    return x.reshape(b, l, num_heads, d // num_heads)


def _time_rope(x: torch.Tensor, times: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate pairs (2i, 2i+1) of x [B, L, H, Dh] by ``t · theta^(-2i/Dh)`` (one time axis, all channels)."""
    dh = x.shape[-1]
    freqs = theta ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)
    angle = times.to(torch.float64)[:, None] * freqs[None, :]  # [L, Dh/2]
    pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], dh // 2, 2).contiguous())
    rotated = pairs * torch.polar(torch.ones_like(angle), angle)[None, :, None, :]
    return torch.view_as_real(rotated).reshape(x.shape)


def reference_softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q kᵀ/√Dh) v over [B, L, H, Dh]; ``key_valid`` bool [B, Lk] or per query [B, Lq, Lk]
    (False = ignored).

    A query with no valid key gets zeros (the attention API's rule), not the NaN of softmax(-inf).
    """
    logits = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5
    if key_valid is None:
        return torch.einsum("bhqk,bkhd->bqhd", torch.softmax(logits, dim=-1), v)
    valid = key_valid[:, None, None, :] if key_valid.ndim == 2 else key_valid[:, None]
    logits = logits.masked_fill(~valid, float("-inf"))
    weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)
    return torch.einsum("bhqk,bkhd->bqhd", weights, v)


def reference_text_cross_attention(
    module: TextCrossAttention, latent: torch.Tensor, text: torch.Tensor, text_lengths: torch.Tensor | None
) -> torch.Tensor:
    """Eq. 4 in float64: latent [B, L, D], text [B, Lt, D] -> [B, L, D]."""
    x, t = _f64(latent), _f64(text)
    h = module.num_heads
    q = _rms(
        _heads(_linear(_layer_norm(x, module.norm), module.q), h), module.q_norm.weight, module.q_norm.eps
    )
    kv = _linear(t, module.kv)
    k, v = kv[..., : x.shape[-1]], kv[..., x.shape[-1] :]
    k = _rms(_heads(k, h), module.k_norm.weight, module.k_norm.eps)
    valid = None
    if text_lengths is not None:
        valid = torch.arange(t.shape[1])[None, :] < text_lengths[:, None]
    out = reference_softmax_attention(q, k, _heads(v, h), valid)
    return x + _linear(out.reshape(x.shape), module.out)


def reference_cross_modal_attention(
    module: CrossModalAttention,
    x: torch.Tensor,
    context: torch.Tensor,
    *,
    x_times: torch.Tensor,
    context_times: torch.Tensor,
    theta: float,
    context_valid: torch.Tensor | None = None,
    window: float | None = None,
) -> torch.Tensor:
    """One direction of eq. 5 in float64 with a time-only RoPE over the whole head dim.

    ``context_valid``: bool [B, S], context tokens that may be read (None = all). ``window``: the
    time-local exchange, query ``i`` reads context ``j`` only when ``|t_i - t_j| <= window``
    (``time_window_mask``'s rule, with its 1e-6 relative slack).
    """
    x64, c64 = _f64(x), _f64(context)
    h, d = module.num_heads, x.shape[-1]
    q = _rms(_heads(_linear(_layer_norm(x64, module.query_norm), module.q), h), module.q_norm.weight, 1e-6)
    kv = _linear(_layer_norm(c64, module.context_norm), module.kv)
    k = _rms(_heads(kv[..., :d], h), module.k_norm.weight, 1e-6)
    q, k = _time_rope(q, x_times, theta), _time_rope(k, context_times, theta)
    if window is not None:
        near = torch.tensor(
            [[abs(float(tq) - float(tk)) <= window * (1 + 1e-6) for tk in context_times] for tq in x_times]
        )  # [L, S], one pair at a time; the same 1e-6 relative slack for rounding as the module
        base = torch.ones(x.shape[0], context.shape[1], dtype=torch.bool)
        context_valid = (base if context_valid is None else context_valid)[:, None, :] & near[None]
    out = reference_softmax_attention(q, k, _heads(kv[..., d:], h), context_valid)
    return x64 + _linear(out.reshape(x64.shape), module.out)


def reference_av_exchange(
    module: AudioVideoCrossAttention,
    video: torch.Tensor,
    audio: torch.Tensor,
    *,
    video_times: torch.Tensor,
    audio_times: torch.Tensor,
    theta: float,
    video_valid: torch.Tensor | None = None,
    audio_valid: torch.Tensor | None = None,
    window: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5 in float64: (video', audio') in the module's order.

    ``video_valid`` [B, Lv] / ``audio_valid`` [B, La]: bool, the tokens the other modality may read.
    ``window``: the time-local exchange (``reference_cross_modal_attention``), both directions.
    """
    new_audio = reference_cross_modal_attention(
        module.audio_from_video,
        audio,
        video,
        x_times=audio_times,
        context_times=video_times,
        theta=theta,
        context_valid=video_valid,
        window=window,
    )
    read = new_audio if module.order is AVExchangeOrder.SEQUENTIAL else _f64(audio)
    new_video = reference_cross_modal_attention(
        module.video_from_audio,
        video,
        read,
        x_times=video_times,
        context_times=audio_times,
        theta=theta,
        context_valid=audio_valid,
        window=window,
    )
    return new_video, new_audio
