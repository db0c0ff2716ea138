"""Validation of the tensors the metrics accept; every message names the argument and the problem.

Metrics compute in the input's precision when it is float32 or float64; float16 and bfloat16 are
promoted to float32 (their 8-bit-like resolution is enough for the pixels, not for the STFT).
"""

from __future__ import annotations

import torch

from skyreels_v4.world.palette import Colour, Shape

#: Values may leave [-1, 1] by this much (decoder overshoot); anything further is an error.
RANGE_SLACK = 1e-3


def _compute_dtype(tensor: torch.Tensor, name: str) -> torch.dtype:
    if not tensor.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {tensor.dtype}")
    return tensor.dtype if tensor.dtype in (torch.float32, torch.float64) else torch.float32


def _check_range(tensor: torch.Tensor, name: str) -> None:
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name}: expected finite values, got NaN or inf")
    low, high = float(tensor.min()), float(tensor.max())
    if low < -1 - RANGE_SLACK or high > 1 + RANGE_SLACK:
        raise ValueError(
            f"{name}: expected values in [-1, 1] (clamp first), got range [{low:.4g}, {high:.4g}]"
        )


def check_video(video: object, name: str = "video") -> torch.Tensor:
    """``[B, 3, F, H, W]`` float in [-1, 1] -> the same tensor in its compute dtype, on the CPU."""
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [B, 3, F, H, W], got {type(video).__name__}")
    dtype = _compute_dtype(video, name)
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"{name}: expected shape [B, 3, F, H, W], got {tuple(video.shape)}")
    if video.shape[0] < 1 or video.shape[2] < 2 or min(video.shape[3:]) < 4:
        raise ValueError(f"{name}: expected B >= 1, F >= 2 and H, W >= 4, got {tuple(video.shape)}")
    video = video.detach().to(device="cpu", dtype=dtype)
    _check_range(video, name)
    return video


def check_audio(audio: object, name: str = "audio") -> torch.Tensor:
    """``[B, C, S]`` float waveform in [-1, 1] -> the same tensor in its compute dtype, on the CPU."""
    if not isinstance(audio, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [B, C, S], got {type(audio).__name__}")
    dtype = _compute_dtype(audio, name)
    if audio.ndim != 3 or audio.shape[0] < 1 or audio.shape[1] < 1 or audio.shape[2] < 1:
        raise ValueError(f"{name}: expected shape [B, C, S] with B, C, S >= 1, got {tuple(audio.shape)}")
    audio = audio.detach().to(device="cpu", dtype=dtype)
    _check_range(audio, name)
    return audio


def check_batch(batch: int, **tensors: torch.Tensor) -> None:
    """Every tensor's first dimension must be ``batch``."""
    for name, tensor in tensors.items():
        if tensor.shape[0] != batch:
            raise ValueError(f"{name}: expected batch size {batch} on dim 0, got shape {tuple(tensor.shape)}")


def check_ids(ids: object, name: str, num_values: int, batch: int, allow_padding: bool) -> torch.Tensor:
    """Integer label ids ``[B, N]`` (or ``[B]`` without padding) -> int64 CPU tensor."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name}: expected an integer torch.Tensor, got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer tensor, got dtype {ids.dtype}")
    expected_ndim = 2 if allow_padding else 1
    if ids.ndim != expected_ndim or ids.shape[0] != batch:
        layout = "[B, N]" if allow_padding else "[B]"
        raise ValueError(f"{name}: expected shape {layout} with B = {batch}, got {tuple(ids.shape)}")
    ids = ids.detach().to(device="cpu", dtype=torch.int64)
    low = -1 if allow_padding else 0
    if ids.numel() and (int(ids.min()) < low or int(ids.max()) >= num_values):
        raise ValueError(
            f"{name}: expected ids in [{low}, {num_values - 1}], "
            f"got range [{int(ids.min())}, {int(ids.max())}]"
        )
    return ids


def check_object_labels(
    colour_ids: object, shape_ids: object, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt objects ``[B, N]`` (``-1`` pads both ids of a missing object)."""
    colours = check_ids(colour_ids, "colour_ids", len(Colour), batch, allow_padding=True)
    shapes = check_ids(shape_ids, "shape_ids", len(Shape), batch, allow_padding=True)
    if colours.shape != shapes.shape:
        raise ValueError(
            f"shape_ids: expected the shape of colour_ids {tuple(colours.shape)}, got {tuple(shapes.shape)}"
        )
    if not torch.equal(colours < 0, shapes < 0):
        raise ValueError("colour_ids/shape_ids: expected -1 padding at the same positions in both")
    return colours, shapes
