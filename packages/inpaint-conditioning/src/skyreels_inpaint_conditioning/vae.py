"""The minimal video-VAE protocol this package needs, and the cached latent of a black frame.

Shape legend: B batch, F pixel frames, H, W pixel size, C latent channels, T latent frames, h, w
latent size.

Paper eq. 7: ``I`` holds "VAE-encoded conditional frames (with non-conditional frames filled with
black image latents)". The black image latent is the VAE latent of ONE black frame (pixels -1 in
[-1, 1]), ``[1, C, 1, h, w]``; it is the same tensor at every latent time step. We compute it once per
(VAE, dtype, device, spatial size) and keep it in a small cache that does not keep the VAE alive.

Why one frame and not the latent of an all-black clip: for a causal VAE the latents of a black clip
change with the time index (the causal context differs), so "the black latent" would depend on the
clip length and position; the paper's words are "black image latents", and latent 0 of a black clip
IS the black image latent (first-frame property, FACTS.md). See docs/decisions/0005.
"""

from __future__ import annotations

import weakref
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "BlackLatentCache",
    "VideoVae",
    "black_image_latent",
    "check_video_vae",
    "default_black_latent_cache",
]


@runtime_checkable
class VideoVae(Protocol):
    """What the conditioning code needs from a video VAE (the Wan adapter and test fakes both fit).

    Attributes:
        temporal_factor: pixel frames per latent frame after the first (Wan: 4). The encoder must be
            causal: latent 0 depends on frame 0 only, latent ``i`` on frames ``<= 4i``.
        spatial_factor: pixels per latent cell along height and width (Wan: 8).
        latent_channels: ``C`` (Wan 2.1: 16).
    """

    temporal_factor: int
    spatial_factor: int
    latent_channels: int

    def encode(self, pixels: Tensor) -> Tensor:
        """Encode ``[B, 3, F, H, W]`` pixels in [-1, 1] to the latents the transformer sees,
        ``[B, C, T, h, w]`` (already normalised, e.g. Wan's per-channel mean/std, and deterministic:
        the posterior mean, not a sample)."""
        ...


class BlackLatentCache:
    """Cache of black-image latents, keyed by VAE object (weakly) and ``(dtype, device, H, W)``.

    Assumes the VAE's weights do not change while it is cached (the VAE is frozen in every stage of
    the paper); call :meth:`clear` after loading new weights into the same object.
    """

    def __init__(self) -> None:
        self._entries: weakref.WeakKeyDictionary[object, dict[tuple[object, ...], Tensor]] = (
            weakref.WeakKeyDictionary()
        )

    def get(
        self, vae: VideoVae, *, height: int, width: int, dtype: torch.dtype, device: torch.device | str
    ) -> Tensor:
        """Black image latent ``[1, C, 1, h, w]`` of ``vae`` for ``H x W`` pixels, on ``device`` in ``dtype``.

        Encodes ``-1 * ones([1, 3, 1, H, W])`` on the first request only (under ``torch.no_grad``).
        """
        check_video_vae(vae)
        device = torch.device(device)
        try:
            per_vae = self._entries.setdefault(vae, {})
        except TypeError as err:  # not weak-referenceable or not hashable
            raise TypeError(
                f"vae: the black-latent cache keys VAEs by weak reference; {type(vae).__name__} does not "
                f"support weak references or hashing ({err})"
            ) from err
        key = (dtype, device, int(height), int(width))
        cached = per_vae.get(key)
        if cached is None:
            black = torch.full((1, 3, 1, height, width), -1.0, dtype=dtype, device=device)
            with torch.no_grad():
                latent = vae.encode(black)
            expected = (1, vae.latent_channels, 1, height // vae.spatial_factor, width // vae.spatial_factor)
            if tuple(latent.shape) != expected:
                raise ValueError(
                    f"vae.encode: a black frame [1, 3, 1, {height}, {width}] should encode to {expected}, "
                    f"got {tuple(latent.shape)}"
                )
            cached = latent.detach().to(dtype=dtype, device=device)
            per_vae[key] = cached
        return cached

    def clear(self, vae: VideoVae | None = None) -> None:
        """Forget every entry, or only those of ``vae``."""
        if vae is None:
            self._entries.clear()
        else:
            self._entries.pop(vae, None)

    def __len__(self) -> int:
        """Number of cached tensors over all VAEs."""
        return sum(len(v) for v in self._entries.values())


default_black_latent_cache = BlackLatentCache()
"""The process-wide cache used when a caller does not pass its own."""


def black_image_latent(
    vae: VideoVae,
    *,
    height: int,
    width: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    cache: BlackLatentCache | None = None,
) -> Tensor:
    """Latent ``[1, C, 1, h, w]`` of one black ``H x W`` frame, from ``cache`` (default: process-wide)."""
    cache = default_black_latent_cache if cache is None else cache
    return cache.get(vae, height=height, width=width, dtype=dtype, device=device)


def check_video_vae(vae: object) -> None:
    """Raise ``TypeError`` unless ``vae`` follows :class:`VideoVae` with positive int factors."""
    if not isinstance(vae, VideoVae):
        raise TypeError(
            "vae: expected an object with encode(pixels) and int attributes temporal_factor, "
            f"spatial_factor, latent_channels (the VideoVae protocol), got {type(vae).__name__}"
        )
    for name in ("temporal_factor", "spatial_factor", "latent_channels"):
        value = getattr(vae, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TypeError(f"vae.{name}: expected a positive int, got {value!r}")
