"""Bidirectional audio-video cross-attention (paper eq. 5), zero-initialised.

    a' = a + CrossAttn(Q = a, K = v, V = v)
    v' = v + CrossAttn(Q = v, K = a', V = a')      (paper order: video reads the updated audio)

``AVExchangeOrder.PARALLEL`` lets both read the state before the update (``K = V = a`` above), which
is what e.g. Ovi does and lets the two directions run concurrently. Both branches have width D, so
no projection is needed between them (paper 3.1).

Each direction: affine LayerNorm on the query stream and on the context stream, q/k/v projections,
per-head RMSNorm on q and k, RoPE on q and k from each token's *time* only (see ``JointAudioVideo
Transformer``: video tokens at their latent frame, audio tokens at their frame scaled into video
latent units), and a zero-initialised output projection, so adding the exchange to a pretrained
text-to-video model changes nothing until training moves it.

Key masks: a token masked as a key of its own branch (``latent_key_mask`` False: padding, hidden
tokens) is never read by the other modality either. ``key_mask_from_bool`` turns a bool ``[B, L]``
key mask into the cheapest attention mask (key padding when the valid keys are a prefix, which the
flash backend runs; dense otherwise). A query with no valid key gets a zero attention output, so its
update is the output projection's bias only.

Shape legend: B batch, Lv video tokens, La audio tokens, D width, H heads.
"""

from __future__ import annotations

import enum

import torch
from torch import nn

from skyreels_attention import AttentionConfig, AttentionKernel, DenseMask, KeyPaddingMask
from skyreels_mmdit_blocks.block_context import Rotary
from skyreels_mmdit_blocks.multihead import HeadRMSNorm, merge_heads, split_heads
from skyreels_mmdit_blocks.rotary import rotate_prefix

__all__ = [
    "AVExchangeOrder",
    "AudioVideoCrossAttention",
    "CrossModalAttention",
    "key_mask_from_bool",
    "time_window_mask",
]

KeyMask = KeyPaddingMask | DenseMask


class AVExchangeOrder(enum.Enum):
    """Which audio state the video reads in eq. 5."""

    SEQUENTIAL = "sequential"  # the paper: audio reads video, then video reads the *updated* audio
    PARALLEL = "parallel"  # both read the states from before the exchange


def _check_bool_keys(keys: object, name: str, shape: str) -> None:
    """A key mask must be a 2-D bool tensor; else a ValueError naming ``name``."""
    if not isinstance(keys, torch.Tensor) or keys.dtype != torch.bool or keys.ndim != 2:
        got = f"{keys.dtype} {tuple(keys.shape)}" if isinstance(keys, torch.Tensor) else type(keys)
        raise ValueError(f"{name} must be a bool tensor {shape}; got {got}")


def key_mask_from_bool(
    keys_BL: torch.Tensor | None, *, name: str = "key_mask"
) -> KeyPaddingMask | DenseMask | None:
    """bool ``[B, L]`` (True = may be attended as a key) -> the attention mask for those keys.

    None when every key is valid (no mask at all), ``KeyPaddingMask`` when each row's valid keys are
    a prefix, else a dense bool ``[B, 1, 1, L]`` mask. Inspecting the values costs one host sync, so
    call it once per forward, not per layer.
    """
    if keys_BL is None:
        return None
    _check_bool_keys(keys_BL, name, "[B, L]")
    if bool(keys_BL.all()):
        return None
    lengths = keys_BL.sum(dim=1)
    prefix = torch.arange(keys_BL.shape[1], device=keys_BL.device)[None, :] < lengths[:, None]
    if torch.equal(prefix, keys_BL):
        return KeyPaddingMask(valid_lengths=lengths)
    return DenseMask(keys_BL[:, None, None, :])


def time_window_mask(
    query_time: torch.Tensor,
    key_time: torch.Tensor,
    *,
    window: float,
    key_mask: torch.Tensor | None = None,
) -> DenseMask:
    """A time-local exchange: query ``i`` may read key ``j`` only when ``|t_i - t_j| <= window``
    (with a relative slack of 1e-6, so that a key exactly one window away is kept despite rounding).

    Args:
        query_time, key_time: ``[Lq]`` / ``[Lk]`` or ``[B, Lq]`` / ``[B, Lk]``, the tokens' times in
            one unit (the exchange's RoPE time: video latent frames).
        window: half-width of the window, > 0, in the same unit.
        key_mask: optional bool ``[B, Lk]`` (True = may be read), combined with the window.

    Returns:
        A bool ``DenseMask`` ``[B or 1, 1, Lq, Lk]``. A query with no key in its window gets a zero
        attention output (see ``CrossModalAttention``).
    """
    if isinstance(window, bool) or not isinstance(window, (int, float)) or not 0 < window < float("inf"):
        raise ValueError(f"window must be a finite number > 0; got {window!r}")
    for name, value in (("query_time", query_time), ("key_time", key_time)):
        if not isinstance(value, torch.Tensor) or value.ndim not in (1, 2) or not value.is_floating_point():
            got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value)
            raise ValueError(f"{name} must be a float tensor [L] or [B, L]; got {got}")
    query = query_time if query_time.ndim == 2 else query_time[None]
    key = key_time if key_time.ndim == 2 else key_time[None]
    local = (query[:, :, None].float() - key[:, None, :].float()).abs() <= window * (1 + 1e-6)
    if key_mask is not None:
        _check_bool_keys(key_mask, "key_mask", "[B, Lk]")
        if key_mask.shape[1] != local.shape[2]:
            raise ValueError(f"key_mask covers {key_mask.shape[1]} keys; key_time has {local.shape[2]}")
        local = local & key_mask[:, None, :]
    return DenseMask(local[:, None])


class CrossModalAttention(nn.Module):
    """One direction of the exchange: ``x + Out(Attn(q(x), k(ctx), v(ctx)))`` with ``Out`` = 0 at init."""

    def __init__(self, *, dim: int, num_heads: int, attention: AttentionConfig | None = None) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim must be divisible by num_heads; got dim={dim}, num_heads={num_heads}")
        self.num_heads = num_heads
        self.attention = AttentionKernel(attention)
        self.query_norm = nn.LayerNorm(dim, eps=1e-6)
        self.context_norm = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = HeadRMSNorm(dim // num_heads)
        self.k_norm = HeadRMSNorm(dim // num_heads)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self,
        x_BLD: torch.Tensor,
        context_BSD: torch.Tensor,
        *,
        x_rotary: Rotary | None,
        context_rotary: Rotary | None,
        context_mask: KeyMask | None = None,
    ) -> torch.Tensor:
        """x [B, L, D] reads context [B, S, D] -> updated x [B, L, D] (residual included).

        ``x_rotary`` / ``context_rotary`` need one row per token of ``x`` / ``context``.
        ``context_mask``: which context tokens may be read (key padding over S, or a dense mask
        broadcastable to ``[B, H, L, S]``, see ``key_mask_from_bool``); None = all.
        """
        q = self.q_norm(split_heads(self.q(self.query_norm(x_BLD)), self.num_heads))
        k, v = self.kv(self.context_norm(context_BSD)).chunk(2, dim=-1)
        k = self.k_norm(split_heads(k, self.num_heads))
        q = rotate_prefix(q, x_rotary, num_latent=x_BLD.shape[1], name="x_rotary")
        k = rotate_prefix(k, context_rotary, num_latent=context_BSD.shape[1], name="context_rotary")
        out = self.attention(q, k, split_heads(v, self.num_heads), mask=context_mask)
        return x_BLD + self.out(merge_heads(out))


class AudioVideoCrossAttention(nn.Module):
    """Eq. 5 at one depth: ``audio_from_video`` then ``video_from_audio`` in the configured order."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        order: AVExchangeOrder = AVExchangeOrder.SEQUENTIAL,
        attention: AttentionConfig | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(order, AVExchangeOrder):
            raise TypeError(f"order must be an AVExchangeOrder; got {order!r}")
        self.order = order
        self.audio_from_video = CrossModalAttention(dim=dim, num_heads=num_heads, attention=attention)
        self.video_from_audio = CrossModalAttention(dim=dim, num_heads=num_heads, attention=attention)

    def forward(
        self,
        video_BLD: torch.Tensor,
        audio_BSD: torch.Tensor,
        *,
        video_rotary: Rotary | None,
        audio_rotary: Rotary | None,
        video_key_mask: KeyMask | None = None,
        audio_key_mask: KeyMask | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """video [B, Lv, D], audio [B, La, D] -> (video', audio'), same shapes.

        ``video_key_mask``: video tokens the audio may read (over Lv); ``audio_key_mask``: audio
        tokens the video may read (over La). None = all; build them with ``key_mask_from_bool``.
        """
        new_audio = self.audio_from_video(
            audio_BSD,
            video_BLD,
            x_rotary=audio_rotary,
            context_rotary=video_rotary,
            context_mask=video_key_mask,
        )
        audio_read = new_audio if self.order is AVExchangeOrder.SEQUENTIAL else audio_BSD
        new_video = self.video_from_audio(
            video_BLD,
            audio_read,
            x_rotary=video_rotary,
            context_rotary=audio_rotary,
            context_mask=audio_key_mask,
        )
        return new_video, new_audio
