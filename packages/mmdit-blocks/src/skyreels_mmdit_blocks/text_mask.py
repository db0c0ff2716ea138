"""Text padding masks -> per-sample valid lengths.

Text embeddings arrive right-padded with a mask ``[B, Lt]`` (1 = real token, 0 = padding), as the
HunyuanVideo text encoder produces them. Everything downstream needs only the valid length per
sample: the joint attention over ``[latent; text]`` ignores keys at or beyond ``L + length`` (exactly
HunyuanVideo's mask), and text-only attentions ignore keys at or beyond ``length``.
"""

from __future__ import annotations

import torch

__all__ = ["text_lengths_from_mask"]


def text_lengths_from_mask(text_mask: torch.Tensor, *, batch: int, text_len: int) -> torch.Tensor:
    """[B, Lt] mask (bool or 0/1 numbers) -> int64 [B] valid lengths.

    Raises ValueError unless the mask is ``[batch, text_len]``, right-padded (ones then zeros) and
    every sample has at least one real token (an all-padding row has nothing to attend to).
    """
    if not isinstance(text_mask, torch.Tensor):
        raise TypeError(f"text_mask must be a torch.Tensor [B, Lt]; got {type(text_mask).__name__}")
    if text_mask.shape != (batch, text_len):
        raise ValueError(f"text_mask must have shape [{batch}, {text_len}]; got {tuple(text_mask.shape)}")
    keep = text_mask != 0
    if text_mask.dtype != torch.bool and not torch.all((text_mask == 0) | (text_mask == 1)):
        raise ValueError("text_mask must hold only 0 and 1 (1 = real token, 0 = padding)")
    lengths = keep.sum(dim=1)
    expected = torch.arange(text_len, device=text_mask.device)[None, :] < lengths[:, None]
    if not torch.equal(keep, expected):
        raise ValueError("text_mask must be right-padded (each row: ones, then zeros); got a row with a gap")
    if bool((lengths == 0).any()):
        raise ValueError("text_mask has a row with no real token; every sample needs at least one")
    return lengths
