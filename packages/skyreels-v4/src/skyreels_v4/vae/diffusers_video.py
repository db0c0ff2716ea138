"""Adapter over diffusers' causal video VAEs (Wan 2.1 ``AutoencoderKLWan`` and HunyuanVideo's
``AutoencoderKLHunyuanVideo``): the pretrained video VAE of paper section 3.1, behind :class:`VideoCodec`.

Shape legend: B batch, F = 1 + tf * (T - 1) pixel frames, H, W pixels, C latent channels, T latent
frames, h = H / sf, w = W / sf.

What the raw diffusers calls do not do, and this adapter does (FACTS-wave2 sections 1-2):

- Normalisation. Wan's per-channel ``latents_mean`` / ``latents_std`` are config lists that the VAE
  never applies (its pipeline does ``(z - mean) / std``); they are not checked against ``z_dim`` either,
  so a length mismatch raises here. HunyuanVideo multiplies by ``scaling_factor`` (mean 0, std
  ``1 / scaling_factor``). ``encode`` returns normalised posterior means; ``decode`` undoes it.
- Compression ratios come from the architecture (Wan: ``len(dim_mult) - 1`` spatial halvings and the
  ``temperal_downsample`` flags; HunyuanVideo: the rule its encoder uses to place downsamplers), not from
  the declarative ``scale_factor_*`` fields, which can disagree with the layers.
- Frame counts: a clip whose F is not ``1 + 4k`` is silently floored by diffusers; here it raises.
- Tiling, temporal chunks and batch slices come from :class:`VideoTilingConfig` (not diffusers' own tiling).
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from skyreels_v4.errors import ConfigMismatchError, FileFormatError
from skyreels_v4.io import atomic_write_json, read_json
from skyreels_v4.vae.tiling import VideoTilingConfig
from skyreels_v4.vae.video_codec import FORMAT_VERSION, VideoCodec, require_fields, tiling_from_config

__all__ = ["DiffusersVaeKind", "DiffusersVideoVae", "diffusers_vae_factors"]

VAE_SUBFOLDER = "vae"


class DiffusersVaeKind(enum.Enum):
    """Which diffusers VAE class is wrapped."""

    WAN = "wan"
    HUNYUAN_VIDEO = "hunyuan_video"

    @property
    def diffusers_class(self) -> type:
        from diffusers import AutoencoderKLHunyuanVideo, AutoencoderKLWan

        return AutoencoderKLWan if self is DiffusersVaeKind.WAN else AutoencoderKLHunyuanVideo

    @classmethod
    def of(cls, vae: object) -> DiffusersVaeKind:
        from diffusers import AutoencoderKLHunyuanVideo, AutoencoderKLWan

        if isinstance(vae, AutoencoderKLWan):
            return cls.WAN
        if isinstance(vae, AutoencoderKLHunyuanVideo):
            return cls.HUNYUAN_VIDEO
        raise TypeError(
            "vae: expected a diffusers AutoencoderKLWan or AutoencoderKLHunyuanVideo, "
            f"got {type(vae).__name__}"
        )


def diffusers_vae_factors(vae: Any) -> tuple[int, int, int]:
    """``(temporal_factor, spatial_factor, latent_channels)`` from the VAE's architecture."""
    config = vae.config
    if DiffusersVaeKind.of(vae) is DiffusersVaeKind.WAN:
        halvings = len(config.dim_mult) - 1
        spatial = 2**halvings * (config.patch_size or 1)
        temporal = 2 ** sum(bool(flag) for flag in list(config.temperal_downsample)[:halvings])
        return temporal, spatial, int(config.z_dim)
    # HunyuanVideo's encoder: block i halves H, W if i < log2(spatial ratio); time as below.
    blocks = len(config.block_out_channels)
    spatial_layers = int(math.log2(config.spatial_compression_ratio))
    time_layers = int(math.log2(config.temporal_compression_ratio))
    spatial = 2 ** sum(i < spatial_layers for i in range(blocks))
    if config.temporal_compression_ratio == 4:
        temporal = 2 ** sum(blocks - 1 - time_layers <= i < blocks - 1 for i in range(blocks))
    else:
        temporal = 2 ** sum(i < time_layers for i in range(blocks))
    return temporal, spatial, int(config.latent_channels)


class DiffusersVideoVae(VideoCodec):
    """A diffusers Wan / HunyuanVideo VAE as a :class:`VideoCodec` (module docstring).

    Args:
        vae: the diffusers model (kept as ``self.vae``; moved and cast with this module).
        tiling: memory bounds (default: none).
        latents_mean, latents_std: per-channel statistics overriding the VAE config's (Wan) or
            ``scaling_factor`` (HunyuanVideo), each of length ``latent_channels``.
    """

    class_name = "DiffusersVideoVae"

    def __init__(
        self,
        vae: Any,
        *,
        tiling: VideoTilingConfig | None = None,
        latents_mean: Sequence[float] | None = None,
        latents_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(tiling=tiling)
        self.kind = DiffusersVaeKind.of(vae)
        self.vae = vae
        self.temporal_factor, self.spatial_factor, self.latent_channels = diffusers_vae_factors(vae)
        c = self.latent_channels
        if self.kind is DiffusersVaeKind.WAN:
            mean = vae.config.latents_mean if latents_mean is None else latents_mean
            std = vae.config.latents_std if latents_std is None else latents_std
        else:
            mean = [0.0] * c if latents_mean is None else latents_mean
            std = [1.0 / float(vae.config.scaling_factor)] * c if latents_std is None else latents_std
        for name, values in (("latents_mean", mean), ("latents_std", std)):
            if values is None or len(values) != c:
                got = None if values is None else len(values)
                raise ConfigMismatchError(
                    f"{name}: expected {c} values (one per latent channel of this VAE), got {got}; pass "
                    f"{name}= explicitly (Wan's config defaults to the 16 Wan 2.1 values)"
                )
        mean_t, std_t = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        if not bool(torch.isfinite(mean_t).all() and torch.isfinite(std_t).all()) or bool((std_t <= 0).any()):
            raise ValueError(
                f"latents_mean/latents_std: expected finite values and std > 0, got {mean}, {std}"
            )
        self.register_buffer("latent_mean", mean_t)
        self.register_buffer("latent_std", std_t)

    # -- VideoCodec ------------------------------------------------------------------------------

    def _vae_dtype_device(self) -> tuple[torch.dtype, torch.device]:
        parameter = next(self.vae.parameters())
        return parameter.dtype, parameter.device

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        shape = (1, -1, 1, 1, 1)
        return self.latent_mean.to(like).view(shape), self.latent_std.to(like).view(shape)

    def _encode_block(self, pixels: Tensor) -> Tensor:
        dtype, device = self._vae_dtype_device()
        raw = self.vae.encode(pixels.to(device=device, dtype=dtype)).latent_dist.mode()
        mean, std = self._stats(raw)
        return (raw - mean) / std

    def _decode_block(self, latents: Tensor) -> Tensor:
        dtype, device = self._vae_dtype_device()
        latents = latents.to(device=device, dtype=dtype)
        mean, std = self._stats(latents)
        return self.vae.decode(latents * std + mean).sample

    # -- folders ---------------------------------------------------------------------------------

    def _write_folder(self, folder: Path) -> None:
        self.vae.save_pretrained(folder / VAE_SUBFOLDER, safe_serialization=True)
        atomic_write_json(
            folder / "config.json",
            {
                "class": self.class_name,
                "format_version": FORMAT_VERSION,
                "kind": self.kind.value,
                "subfolder": VAE_SUBFOLDER,
                "latents_mean": self.latent_mean.tolist(),
                "latents_std": self.latent_std.tolist(),
                "tiling": self.tiling.to_dict(),
            },
        )

    @classmethod
    def _read_folder(cls, folder: Path, config: dict[str, Any]) -> DiffusersVideoVae:
        fields = require_fields(folder, config, ("kind", "subfolder", "latents_mean", "latents_std"))
        try:
            kind = DiffusersVaeKind(fields["kind"])
        except ValueError:
            raise FileFormatError(
                folder / "config.json",
                f"kind: expected one of {[k.value for k in DiffusersVaeKind]}, got {fields['kind']!r}",
            ) from None
        vae = _load_diffusers(kind, folder / fields["subfolder"])
        return cls(
            vae,
            tiling=tiling_from_config(folder, config),
            latents_mean=fields["latents_mean"],
            latents_std=fields["latents_std"],
        )

    @classmethod
    def from_diffusers_folder(
        cls,
        folder: str | os.PathLike[str],
        *,
        tiling: VideoTilingConfig | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> DiffusersVideoVae:
        """Wrap a diffusers VAE folder (e.g. ``Wan2.1-T2V-1.3B-Diffusers/vae``, or the repo root holding
        ``vae/``) as downloaded: ``config.json`` with ``_class_name`` + safetensors weights."""
        root = Path(folder)
        if (root / VAE_SUBFOLDER / "config.json").is_file():
            root = root / VAE_SUBFOLDER
        name = read_json(root / "config.json", what="diffusers VAE config.json").get("_class_name")
        kinds = {
            "AutoencoderKLWan": DiffusersVaeKind.WAN,
            "AutoencoderKLHunyuanVideo": DiffusersVaeKind.HUNYUAN_VIDEO,
        }
        if name not in kinds:
            raise FileFormatError(
                root / "config.json", f"_class_name: expected one of {sorted(kinds)}, got {name!r}"
            )
        codec = cls(_load_diffusers(kinds[name], root), tiling=tiling).eval()
        if dtype is not None or device is not None:
            codec = codec.to(device=device, dtype=dtype)
        return codec


def _load_diffusers(kind: DiffusersVaeKind, folder: Path) -> Any:
    if not (folder / "config.json").is_file():
        raise FileFormatError(
            folder, f"expected a diffusers {kind.diffusers_class.__name__} folder with config.json"
        )
    if not any(folder.glob("*.safetensors")):
        raise FileFormatError(folder, "expected safetensors weights (pickled .bin weights are not loaded)")
    return kind.diffusers_class.from_pretrained(str(folder), use_safetensors=True)
