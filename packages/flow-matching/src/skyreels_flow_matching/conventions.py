"""The σ convention of flow-matching time and its conversions to the paper's t.

Inside the code (ARCHITECTURE.md section 3) a noisy latent is

    x_σ = (1 - σ)·x0 + σ·ε,        σ = 1 is pure noise, σ = 0 is data,

the network predicts the velocity ``u = dx_σ/dσ = ε - x0`` and is fed the timestep ``1000·σ``
(the public HunyuanVideo / Wan checkpoints and diffusers). The paper (section 3.1, eq. 6) writes

    z_t = t·z0 + (1 - t)·ε,        target v = z0 - ε,

which is the same model with ``t = 1 - σ`` and ``v = -u``. The functions below are the only place
these conversions live; everything else in the package speaks σ.

Shape legend: ``x`` any latent ``[B, ...]`` (video ``[B, C, T, H, W]``, audio ``[B, C, L]``);
``sigma`` a Python float, a 0-d tensor or a per-sample tensor ``[B]``.
"""

from __future__ import annotations

from torch import Tensor

__all__ = [
    "DEFAULT_NUM_TRAIN_TIMESTEPS",
    "add_noise",
    "broadcast_sigma",
    "noise_from_velocity",
    "paper_velocity_to_velocity",
    "shift_sigmas",
    "sigma_to_t",
    "sigma_to_timestep",
    "t_to_sigma",
    "timestep_to_sigma",
    "unshift_sigmas",
    "velocity_target",
    "velocity_to_paper_velocity",
    "x0_from_velocity",
]

# The public checkpoints embed timestep = 1000·σ.
DEFAULT_NUM_TRAIN_TIMESTEPS = 1000

SigmaLike = float | Tensor


def sigma_to_t(sigma: SigmaLike) -> SigmaLike:
    """Paper time ``t = 1 - σ`` (t = 1 is data in the paper's eq. 6)."""
    return 1.0 - sigma


def t_to_sigma(t: SigmaLike) -> SigmaLike:
    """Our noise level ``σ = 1 - t`` from the paper's time t."""
    return 1.0 - t


def velocity_to_paper_velocity(velocity: Tensor) -> Tensor:
    """The paper's target direction ``v = z0 - ε`` from our ``u = ε - x0``: ``v = -u``."""
    return -velocity


def paper_velocity_to_velocity(paper_velocity: Tensor) -> Tensor:
    """Our ``u = ε - x0`` from the paper's ``v = z0 - ε``: ``u = -v``."""
    return -paper_velocity


def sigma_to_timestep(sigma: SigmaLike, num_train_timesteps: int = DEFAULT_NUM_TRAIN_TIMESTEPS) -> SigmaLike:
    """The timestep the network embeds: ``num_train_timesteps · σ`` (1000σ for the public checkpoints)."""
    return sigma * num_train_timesteps


def timestep_to_sigma(
    timestep: SigmaLike, num_train_timesteps: int = DEFAULT_NUM_TRAIN_TIMESTEPS
) -> SigmaLike:
    """Inverse of :func:`sigma_to_timestep`."""
    return timestep / num_train_timesteps


def broadcast_sigma(sigma: SigmaLike, x: Tensor, *, name: str = "sigma") -> SigmaLike:
    """Reshape a per-sample ``sigma [B]`` to ``[B, 1, ..., 1]`` so it broadcasts against ``x [B, ...]``.

    Python floats and 0-d tensors are returned unchanged (they broadcast already).
    """
    if not isinstance(sigma, Tensor):
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
            raise TypeError(f"{name} must be a float or a torch.Tensor, got {type(sigma).__name__}")
        return float(sigma)
    if sigma.ndim == 0:
        return sigma
    if sigma.ndim != 1 or x.ndim == 0 or sigma.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name} must be a scalar or have shape [B] = [{x.shape[0] if x.ndim else '?'}] matching the "
            f"batch of a tensor of shape {list(x.shape)}, got shape {list(sigma.shape)}"
        )
    return sigma.reshape(sigma.shape[0], *([1] * (x.ndim - 1)))


def add_noise(x0: Tensor, noise: Tensor, sigma: SigmaLike) -> Tensor:
    """Forward process ``x_σ = (1 - σ)·x0 + σ·ε``.

    Args:
        x0: clean latents ``[B, ...]``.
        noise: ε, same shape as ``x0``.
        sigma: noise level, a float or ``[B]``.
    Returns:
        ``x_σ`` with the shape and dtype of ``x0``.
    """
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {list(x0.shape)}, got {list(noise.shape)}")
    # σ in x0's dtype: a float32 σ would otherwise promote bf16 latents to float32.
    s = broadcast_sigma(sigma, x0)
    if isinstance(s, Tensor):
        s = s.to(x0.dtype)
    return (1.0 - s) * x0 + s * noise


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    """Regression target of the network: ``u = ε - x0`` (= -(paper's z0 - ε))."""
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {list(x0.shape)}, got {list(noise.shape)}")
    return noise - x0


def x0_from_velocity(x: Tensor, velocity: Tensor, sigma: SigmaLike) -> Tensor:
    """Data estimate from a velocity prediction: ``x0 = x_σ - σ·u``."""
    return x - broadcast_sigma(sigma, x) * velocity


def noise_from_velocity(x: Tensor, velocity: Tensor, sigma: SigmaLike) -> Tensor:
    """Noise estimate from a velocity prediction: ``ε = x_σ + (1 - σ)·u``."""
    return x + (1.0 - broadcast_sigma(sigma, x)) * velocity


def shift_sigmas(sigma: SigmaLike, shift: float) -> SigmaLike:
    """Time shift ``σ' = s·σ / (1 + (s - 1)·σ)`` (SD3: Esser et al. 2024, section 5.3.2; s > 1 favours noise).

    Keeps 0 and 1 fixed and is monotone for every ``s > 0``.
    """
    _check_shift(shift)
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def unshift_sigmas(shifted_sigma: SigmaLike, shift: float) -> SigmaLike:
    """Inverse of :func:`shift_sigmas`: ``σ = σ' / (s - (s - 1)·σ')``."""
    _check_shift(shift)
    return shifted_sigma / (shift - (shift - 1.0) * shifted_sigma)


def _check_shift(shift: float) -> None:
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not shift > 0:
        raise ValueError(f"shift must be a positive float, got {shift!r}")
    if shift == float("inf"):
        raise ValueError(f"shift must be finite, got {shift!r}")
