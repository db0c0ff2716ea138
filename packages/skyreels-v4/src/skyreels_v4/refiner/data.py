"""Refiner training triples (low-res, keyframes, high-res) from procedural high-res latents.

Paper section 4.5 trains the refiner on base-model outputs; here the triples are made by
downsampling high-resolution latents, so the refiner learns the inverse of a known degradation:

- high-res latents ``[C, T, H, W]``: a few smooth Gaussian blobs per clip, each channel its own
  amplitude, drifting in one of four directions (the "motion class") over ``T = 2·T_lo - 1`` frames;
- low-res: every other latent frame (``j -> j/2``, the inverse of the refiner's 2x frame
  interpolation) and 2x2 average pooling in space;
- keyframes: the high-res latents at ``keyframe_indices`` (the base model's high-res keyframes);
- text: a fixed embedding per motion class (``text_tokens x text_dim``), right-padded at random;
- inpainting (with ``inpaint_probability``): a random box of the high-res clip is kept
  (``keep_mask`` 1 there; the source is the clip itself), else ``keep_mask`` is all zeros.

Every item is a deterministic function of (seed, index). Batches are dicts of stacked tensors
(``index``: the items' dataset indices). The training loader is ``skyreels_v4.runs.dataloader``
(resumable order, exact resume); the data module's ``preflight`` checks latent channels, text width
and sizes against the model. On several processes both loaders shard the data over the data-parallel
replicas themselves (``skyreels_v4.runs.data_parallel_of``: under ``SkyReelsParallelStrategy`` the
ranks of one sequence-parallel group read the same batches), so the trainer needs
``use_distributed_sampler: false``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from skyreels_v4.errors import PreflightError
from skyreels_v4.runs import check_matches, data_parallel_of, dataloader

__all__ = ["ProceduralRefinerTriples", "RefinerTripleDataModule", "downsample_latents"]

_DIRECTIONS = ((0.0, 1.0), (0.0, -1.0), (1.0, 0.0), (-1.0, 0.0))  # (dy, dx) per motion class


def downsample_latents(high_res: Tensor, *, time_factor: int = 2, space_factor: int = 2) -> Tensor:
    """``[..., C, T, H, W] -> [..., C, (T-1)/f_t + 1, H/f_s, W/f_s]``: frames ``0, f_t, 2f_t, ...`` and
    ``f_s x f_s`` average pooling (the degradation the refiner learns to undo)."""
    t, h, w = high_res.shape[-3:]
    if (t - 1) % time_factor or h % space_factor or w % space_factor:
        raise ValueError(
            f"high_res (T, H, W) = {(t, h, w)} must have T - 1 divisible by {time_factor} "
            f"and H, W by {space_factor}"
        )
    frames = high_res[..., ::time_factor, :, :]
    flat = frames.reshape(-1, 1, *frames.shape[-2:])
    pooled = F.avg_pool2d(flat, space_factor)
    return pooled.reshape(*frames.shape[:-2], *pooled.shape[-2:])


class ProceduralRefinerTriples(Dataset[dict[str, Tensor]]):
    """``length`` deterministic refiner samples (module docstring); item ``i`` depends on (seed, i) only."""

    def __init__(
        self,
        *,
        length: int,
        seed: int,
        latent_channels: int,
        high_res_shape: tuple[int, int, int],
        keyframe_indices: Sequence[int],
        text_tokens: int,
        text_dim: int,
        inpaint_probability: float,
    ) -> None:
        t, h, w = high_res_shape
        if (t - 1) % 2 or h % 2 or w % 2:
            raise ValueError(
                f"high_res_shape must have odd T and even H, W (2x refiner), got {high_res_shape}"
            )
        if any(not 0 <= i < t for i in keyframe_indices) or len(set(keyframe_indices)) != len(
            keyframe_indices
        ):
            raise ValueError(
                f"keyframe_indices must be distinct frames in [0, {t}), got {list(keyframe_indices)}"
            )
        if not 0.0 <= inpaint_probability <= 1.0:
            raise ValueError(f"inpaint_probability must lie in [0, 1], got {inpaint_probability}")
        self.length, self.seed = length, seed
        self.channels, self.shape = latent_channels, tuple(high_res_shape)
        self.keyframe_indices = list(keyframe_indices)
        self.text_tokens, self.text_dim = text_tokens, text_dim
        self.inpaint_probability = inpaint_probability
        # One text embedding per motion class, shared by every clip of that class.
        class_gen = torch.Generator().manual_seed(seed + 7919)
        self.class_text = torch.randn(len(_DIRECTIONS), text_tokens, text_dim, generator=class_gen)

    def __len__(self) -> int:
        return self.length

    def _clip(self, gen: torch.Generator, motion: int) -> Tensor:
        t, h, w = self.shape
        dy, dx = _DIRECTIONS[motion]
        yy, xx = torch.meshgrid(
            torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
        )
        time = torch.arange(t, dtype=torch.float32).view(t, 1, 1)
        clip = torch.zeros(self.channels, t, h, w)
        for _ in range(3):
            cy, cx = float(torch.rand((), generator=gen)) * h, float(torch.rand((), generator=gen)) * w
            radius = 1.5 + 2.0 * float(torch.rand((), generator=gen))
            speed = 0.5 + 0.5 * float(torch.rand((), generator=gen))
            amplitude = torch.randn(self.channels, 1, 1, 1, generator=gen)
            y = cy + dy * speed * time
            x = cx + dx * speed * time
            clip += amplitude * torch.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * radius**2))
        return clip

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index must lie in [0, {self.length}), got {index}")
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        motion = int(torch.randint(len(_DIRECTIONS), (), generator=gen))
        high_res = self._clip(gen, motion)
        t, h, w = self.shape
        keep = torch.zeros(1, t, h, w)
        if float(torch.rand((), generator=gen)) < self.inpaint_probability:
            bh, bw = max(1, h // 2), max(1, w // 2)
            y0, x0 = (
                int(torch.randint(h - bh + 1, (), generator=gen)),
                int(torch.randint(w - bw + 1, (), generator=gen)),
            )
            keep[:, :, y0 : y0 + bh, x0 : x0 + bw] = 1.0
        valid = int(torch.randint(math.ceil(self.text_tokens / 2), self.text_tokens + 1, (), generator=gen))
        text_mask = (torch.arange(self.text_tokens) < valid).float()
        return {
            "high_res": high_res,
            "low_res": downsample_latents(high_res),
            "keyframes": high_res[:, self.keyframe_indices],
            "keyframe_indices": torch.tensor(self.keyframe_indices, dtype=torch.long),
            "keep_mask": keep,
            "text_tokens": self.class_text[motion] * text_mask[:, None],
            "text_mask": text_mask,
            "index": torch.tensor(index),
        }


class RefinerTripleDataModule(L.LightningDataModule):
    """Procedural train/validation triples (different seeds) for the refiner recipe."""

    def __init__(
        self,
        *,
        latent_channels: int = 4,
        high_res_shape: tuple[int, int, int] = (9, 16, 16),
        keyframe_indices: tuple[int, ...] = (0, 8),
        text_tokens: int = 8,
        text_dim: int = 32,
        inpaint_probability: float = 0.25,
        num_train: int = 512,
        num_val: int = 32,
        batch_size: int = 4,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("latent_channels", latent_channels, 1),
            ("text_tokens", text_tokens, 1),
            ("text_dim", text_dim, 1),
            ("num_train", num_train, 1),
            ("num_val", num_val, 1),
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        if len(tuple(high_res_shape)) != 3 or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in high_res_shape
        ):
            raise ValueError(
                f"high_res_shape: expected three positive ints (T, H, W), got {high_res_shape!r}"
            )
        common = {
            "latent_channels": latent_channels,
            "high_res_shape": tuple(high_res_shape),
            "keyframe_indices": tuple(keyframe_indices),
            "text_tokens": text_tokens,
            "text_dim": text_dim,
            "inpaint_probability": inpaint_probability,
        }
        self.train_set = ProceduralRefinerTriples(length=num_train, seed=seed, **common)
        self.val_set = ProceduralRefinerTriples(length=num_val, seed=seed + 1, **common)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.latent_channels, self.text_dim = latent_channels, text_dim
        self.high_res_shape = tuple(high_res_shape)

    def preflight(self, model: L.LightningModule) -> None:
        """Data vs model before any training: latent channels, text width, sizes vs the patch."""
        refiner = getattr(model, "refiner", None)
        if refiner is None:
            return
        branch = refiner.config.branch
        check_matches(
            "data.latent_channels", self.latent_channels, "the model's latent channels", branch.out_channels
        )
        check_matches("data.text_dim", self.text_dim, "the model's text_dim", branch.text_dim)
        patch = tuple(branch.patch_size)
        if any(size % p for size, p in zip(self.high_res_shape, patch, strict=True)):
            raise PreflightError(
                f"data.high_res_shape: expected (T, H, W) divisible by the model's patch {patch}, "
                f"got {self.high_res_shape}"
            )

    def _data_parallel(self) -> tuple[int, int]:
        return data_parallel_of(getattr(self, "trainer", None), owner="RefinerTripleDataModule")

    def train_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        replicas, rank = self._data_parallel()
        return dataloader(
            self.train_set,
            batch_size=self.batch_size,
            seed=self.seed,
            drop_last=True,
            num_workers=self.num_workers,
            num_replicas=replicas,
            rank=rank,
        )

    def val_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        """The validation clips in order; on several replicas each takes its share (cut so that every
        replica runs as many validation steps: a collective waits for all of them)."""
        replicas, rank = self._data_parallel()
        return dataloader(
            self.val_set,
            batch_size=max(1, min(self.batch_size, len(self.val_set) // replicas)),
            seed=self.seed,
            shuffle=False,
            drop_last=replicas > 1,
            num_workers=self.num_workers,
            num_replicas=replicas,
            rank=rank,
        )
