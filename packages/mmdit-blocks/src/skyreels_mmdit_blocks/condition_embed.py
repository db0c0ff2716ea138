"""The conditioning vector ``c [B, D]`` that drives every adaLN: timestep + pooled text (+ guidance).

    c = MLP_t(sinusoid(1000·σ)) + MLP_p(pooled_text) [+ MLP_g(sinusoid(guidance))]

``sinusoid`` is the 256-channel DDPM embedding with cosines first and frequencies
``exp(-ln(10000)·i/128)``, as in HunyuanVideo (diffusers: ``flip_sin_to_cos=True, shift=0``). Each MLP
is ``Linear -> SiLU -> Linear``. The timestep is the flow-matching timestep ``1000·σ``
(ARCHITECTURE.md section 3).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ConditionEmbedding", "EmbeddingMLP", "check_batch_vector", "sinusoidal_timestep_embedding"]

TIMESTEP_CHANNELS = 256


def check_batch_vector(value: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """``value`` must be a float tensor [B] (one timestep/guidance per sample)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [{batch}]; got {type(value).__name__}")
    if value.shape != (batch,):
        raise ValueError(f"{name} must have shape [{batch}] (one value per sample); got {tuple(value.shape)}")
    return value


def sinusoidal_timestep_embedding(
    timestep: torch.Tensor, dim: int = TIMESTEP_CHANNELS, *, max_period: float = 10000.0
) -> torch.Tensor:
    """[B] (possibly fractional) -> float32 [B, dim] = ``[cos(t·f_i) | sin(t·f_i)]``.

    ``f_i = max_period^(-i / (dim/2))`` for ``i < dim/2``.
    """
    if dim % 2:
        raise ValueError(f"dim must be even; got {dim}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timestep.device) / half
    )
    angles = timestep.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class EmbeddingMLP(nn.Module):
    """``Linear(in, D) -> SiLU -> Linear(D, D)``."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.silu(self.fc1(x.to(self.fc1.weight.dtype))))


class ConditionEmbedding(nn.Module):
    """Timestep, optional pooled-text and optional guidance embeddings, summed.

    Args:
        dim: width D.
        pooled_text_dim: width of the pooled text vector (768 for HunyuanVideo's CLIP), or None when
            the model takes no pooled text.
        guidance: embed a distilled-guidance scale (HunyuanVideo-T2V has one); when on, every call
            must pass ``guidance``, so the layer always receives a gradient.
    """

    def __init__(self, *, dim: int, pooled_text_dim: int | None, guidance: bool) -> None:
        super().__init__()
        self.timestep_mlp = EmbeddingMLP(TIMESTEP_CHANNELS, dim)
        self.pooled_text_mlp = EmbeddingMLP(pooled_text_dim, dim) if pooled_text_dim is not None else None
        self.guidance_mlp = EmbeddingMLP(TIMESTEP_CHANNELS, dim) if guidance else None

    def forward(
        self,
        timestep: torch.Tensor,
        *,
        pooled_text: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """timestep [B] (1000·σ), pooled_text [B, P], guidance [B] -> c [B, D]."""
        if not isinstance(timestep, torch.Tensor) or timestep.ndim != 1:
            got = tuple(timestep.shape) if isinstance(timestep, torch.Tensor) else type(timestep).__name__
            raise ValueError(f"timestep must be a 1-D tensor [B] (1000·σ per sample); got {got}")
        batch = timestep.shape[0]
        c = self.timestep_mlp(sinusoidal_timestep_embedding(timestep))
        if self.pooled_text_mlp is None:
            if pooled_text is not None:
                raise ValueError(
                    "pooled_text was given but this model has no pooled-text embedding (pooled_text_dim=None)"
                )
        else:
            expected = self.pooled_text_mlp.fc1.in_features
            if pooled_text is None:
                raise ValueError(f"pooled_text [B, {expected}] is required (pooled_text_dim={expected})")
            if pooled_text.shape != (batch, expected):
                raise ValueError(
                    f"pooled_text must have shape [{batch}, {expected}]; got {tuple(pooled_text.shape)}"
                )
            c = c + self.pooled_text_mlp(pooled_text)
        if self.guidance_mlp is None:
            if guidance is not None:
                raise ValueError(
                    "guidance was given but this model has no guidance embedding (guidance_embedding=False)"
                )
        else:
            if guidance is None:
                raise ValueError("guidance [B] is required: this model embeds a distilled guidance scale")
            c = c + self.guidance_mlp(
                sinusoidal_timestep_embedding(check_batch_vector(guidance, batch, "guidance"))
            )
        return c
