"""Render the documentation pictures: every task's pixel and latent masks, the random editing masks,
and the positions of a reference-packed token sequence.

Run: ``python -m skyreels_inpaint_conditioning.render_masks --out docs/images/inpaint``
(needs the ``[plot]`` extra: matplotlib, imported only here). Files are written atomically.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from skyreels_inpaint_conditioning.conditioning import build_inpaint_condition
from skyreels_inpaint_conditioning.edit_masks import EditMaskKind, random_edit_mask
from skyreels_inpaint_conditioning.latent_mask import latent_frame_span
from skyreels_inpaint_conditioning.pooling_vae import PoolingVideoVae
from skyreels_inpaint_conditioning.references import pack_video_references
from skyreels_inpaint_conditioning.tasks import (
    CombinedTask,
    ImageInpainting,
    ImageToVideo,
    StartEndInterpolation,
    TaskSpec,
    TextToVideo,
    VideoEditing,
    VideoExtension,
)

__all__ = ["main", "render_all"]

_KEEP = np.array([0.16, 0.40, 0.78])  # condition (1)
_GEN = np.array([0.98, 0.80, 0.45])  # generate (0)
_BAND = np.array([0.88, 0.88, 0.88])  # the pixel frames one latent frame covers
_WHITE = np.array([1.0, 1.0, 1.0])
_F, _S = 17, 32  # pixel frames and side of the example clip (latent grid 5 x 4 x 4)
_GAP = 2


def _colour(mask: np.ndarray) -> np.ndarray:
    return np.where(mask[..., None], _KEEP, _GEN)


def _task_canvas(pixel: np.ndarray, latent: np.ndarray) -> np.ndarray:
    """Pixel frames in a row; below, each latent frame centred under the pixel frames it covers."""
    frames = pixel.shape[0]
    side = pixel.shape[1]
    step = side + _GAP
    canvas = np.ones((2 * side + 3 * _GAP, frames * step, 3))
    for f in range(frames):
        canvas[:side, f * step : f * step + side] = _colour(pixel[f])
    cell = side // latent.shape[1]
    top = side + 3 * _GAP
    for i in range(latent.shape[0]):
        span = latent_frame_span(i)
        x0, x1 = span.start * step, (span.stop - 1) * step + side
        canvas[top - _GAP : top + side, x0:x1] = _BAND
        xc = (x0 + x1) // 2 - side // 2
        canvas[top : top + side, xc : xc + side] = _colour(
            np.kron(latent[i], np.ones((cell, cell))).astype(bool)
        )
    return canvas


def _example_tasks() -> list[tuple[str, TaskSpec, int]]:
    box = torch.ones(_S, _S, dtype=torch.bool)
    box[8:24, 12:28] = False
    moving = random_edit_mask(
        num_frames=_F,
        height=_S,
        width=_S,
        generator=torch.Generator().manual_seed(2),
        kind=EditMaskKind.MOVING_BOX,
    )
    left = torch.zeros(_S, _S, dtype=torch.bool)
    left[:, :16] = True
    hole = torch.ones(_S, _S, dtype=torch.bool)
    hole[5:19, 3:20] = False
    return [
        ("text-to-video: M = 0", TextToVideo(), _F),
        ("image-to-video: M[t=0] = 1", ImageToVideo(), _F),
        ("extension k=5 frames -> M[t<2] = 1", VideoExtension(num_kept_frames=5), _F),
        ("extension k=7 frames -> still M[t<2] = 1", VideoExtension(num_kept_frames=7), _F),
        ("interpolation: M[t=0] = M[t=T-1] = 1", StartEndInterpolation(), _F),
        ("editing, fixed [H, W] mask", VideoEditing(keep_mask=box), _F),
        ("editing, per-frame [F, H, W] mask (moving box)", VideoEditing(keep_mask=moving), _F),
        (
            "extension k=5 + editing (union)",
            CombinedTask(parts=(VideoExtension(num_kept_frames=5), VideoEditing(keep_mask=left))),
            _F,
        ),
        (
            "interpolation + editing (union)",
            CombinedTask(parts=(StartEndInterpolation(), VideoEditing(keep_mask=left))),
            _F,
        ),
        ("image inpainting (F = 1)", ImageInpainting(keep_mask=hole), 1),
    ]


def _save(fig: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def render_task_masks(path: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    vae = PoolingVideoVae()
    tasks = _example_tasks()
    fig = Figure(figsize=(12, 1.15 * len(tasks) + 0.8), layout="constrained")
    axes = fig.subplots(len(tasks), 1)
    for row, (ax, (title, spec, frames)) in enumerate(zip(axes, tasks)):
        video = torch.zeros(1, 3, frames, _S, _S)
        cond = build_inpaint_condition(spec, vae=vae, source_video=video)
        pixel = cond.pixel_mask[0, 0].numpy()
        latent = cond.latent_mask[0, 0].bool().numpy()
        canvas = _task_canvas(pixel, latent)
        if frames == 1:  # pad the one-frame case to the common width
            full = np.ones((canvas.shape[0], _F * (_S + _GAP), 3))
            full[:, : canvas.shape[1]] = canvas
            canvas = full
        ax.imshow(canvas, interpolation="nearest")
        ax.set_title(title, loc="left", fontsize=9, pad=14 if row == 0 else 3)
        if row == 0:  # pixel frame indices once, on top
            ax.xaxis.tick_top()
            ax.set_xticks(
                [(f * (_S + _GAP)) + _S / 2 for f in range(frames)],
                [str(f) for f in range(frames)],
                fontsize=7,
            )
        else:
            ax.set_xticks([])
        ax.set_yticks([_S / 2, 1.5 * _S + 3 * _GAP], ["pixels", "latent M"], fontsize=7)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.legend(
        handles=[
            Patch(color=_KEEP, label="1 = condition (keep)"),
            Patch(color=_GEN, label="0 = generate"),
            Patch(color=_BAND, label="pixel frames of one latent frame"),
        ],
        loc="outside lower center",
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(
        f"Task masks on a {_F}x{_S}x{_S} clip -> 5x4x4 latent grid (causal 4x time, 8x8 cells, conservative)",
        fontsize=10,
    )
    _save(fig, path)


def render_edit_masks(path: Path) -> None:
    from matplotlib.figure import Figure

    kinds = list(EditMaskKind)
    frames = 9
    fig = Figure(figsize=(12, 1.3 * len(kinds)), layout="constrained")
    axes = fig.subplots(len(kinds), 1)
    for ax, kind in zip(axes, kinds):
        mask = random_edit_mask(
            num_frames=frames, height=48, width=64, generator=torch.Generator().manual_seed(1), kind=kind
        ).numpy()
        strip = np.ones((48, frames * 66, 3))
        for f in range(frames):
            strip[:, f * 66 : f * 66 + 64] = _colour(mask[f])
        ax.imshow(strip, interpolation="nearest")
        ax.set_title(f"{kind.value} (seed 1)", loc="left", fontsize=9)
        ax.set_axis_off()
    fig.suptitle("Random editing masks, 9 frames of 48x64: blue = keep, orange = edit", fontsize=10)
    _save(fig, path)


def render_reference_positions(path: Path) -> None:
    from matplotlib.figure import Figure

    image = torch.zeros(1, 4, 1, 6, 4)
    clip = torch.zeros(1, 4, 3, 4, 8)
    packed = pack_video_references([image, clip], video_grid=(3, 6, 8), patch_size=(1, 2, 2))
    t = packed.positions[:, 0].numpy()
    index = np.arange(t.shape[0])
    valid = packed.key_valid[0].numpy()
    n_img = 1 * 3 * 4
    n_ref = packed.num_reference_tokens
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.scatter(index[:n_img], t[:n_img], s=12, color="tab:purple", label="image reference (t_i = 1)")
    ax.scatter(index[n_img:n_ref], t[n_img:n_ref], s=12, color="tab:green", label="clip reference (t_i = 3)")
    ax.scatter(index[n_ref:], t[n_ref:], s=12, color="tab:blue", label="generated video (T = 3)")
    ax.scatter(index[~valid], t[~valid], s=40, marker="x", color="black", label="padding token (key masked)")
    ax.axvline(n_ref - 0.5, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("token index in [Z_cond; Z_video] (eq. 8), patch 1x2x2, t-major")
    ax.set_ylabel("RoPE temporal position t")
    ax.set_title(
        "Eq. 9: references at t = -N_cond + i (N_cond = 4 latent frames), video at t = 0..T-1;"
        " loss mask 0 left of the line",
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, path)


def render_all(out: Path) -> list[Path]:
    """Write every picture under ``out`` and return their paths."""
    out = Path(out)
    paths = [out / "task_masks.png", out / "edit_masks.png", out / "reference_positions.png"]
    render_task_masks(paths[0])
    render_edit_masks(paths[1])
    render_reference_positions(paths[2])
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. docs/images/inpaint")
    args = parser.parse_args(argv)
    for path in render_all(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
