"""A picture of what goes into the pipeline and what comes out, task by task (docs/pipeline.md).

    python -m skyreels_v4.pipeline.montage docs/images/pipeline/tasks.png

Inputs are procedural-world clips (``skyreels_v4.world``); the pipeline is a seeded tiny one with
random weights and exactly invertible codecs, so the generated regions are noise while everything a
task conditions on (i2v's first frame, interpolation's ends, an extension's prefix, an edit's kept
half, v2a's video, a2v's audio) comes out exactly: the picture shows what each task keeps and makes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from skyreels_v4.io import atomic_path
from skyreels_v4.pipeline.output import GenerationOutput, frames_to_uint8
from skyreels_v4.pipeline.pipeline import GenerationDefaults, SkyReelsV4Pipeline
from skyreels_v4.pipeline.request import GenerationRequest
from skyreels_v4.pipeline.sampling import SamplingConfig

__all__ = ["demo_pipeline", "render_task_montage"]


def demo_pipeline(seed: int = 0) -> SkyReelsV4Pipeline:
    """A tiny pipeline with seeded random weights (32x32, 17 frames, 16 fps, 16 kHz; 2 Euler steps)."""
    from skyreels_v4.model import SkyReelsV4Transformer, transformer_preset
    from skyreels_v4.text import EmbeddedTextEncoder, EmbeddedTextEncoderConfig
    from skyreels_v4.vae import FrameAudioCodec, PixelShuffleVideoCodec

    torch.manual_seed(seed)
    video_vae = PixelShuffleVideoCodec(temporal_factor=4, spatial_factor=4)
    audio_vae = FrameAudioCodec(sample_rate=16000, hop_length=256)
    config = transformer_preset(
        "tiny",
        video_latent_channels=video_vae.latent_channels,
        audio_latent_channels=audio_vae.latent_channels,
    )
    return SkyReelsV4Pipeline(
        transformer=SkyReelsV4Transformer(config).eval(),
        video_vae=video_vae,
        audio_vae=audio_vae,
        text_encoder=EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=32)),
        sampling=SamplingConfig(num_steps=2),
        defaults=GenerationDefaults(num_frames=17, height=32, width=32, fps=16.0),
    )


def _world_clip() -> tuple[torch.Tensor, torch.Tensor, str]:
    from skyreels_v4.world import WorldConfig, make_clip

    clip = make_clip(WorldConfig(size=32, num_frames=17, fps=16, sample_rate=16000), seed=0, index=3)
    video = torch.from_numpy(clip.frames).permute(3, 0, 1, 2).float() / 127.5 - 1
    return video, torch.from_numpy(clip.audio[:1]).float(), clip.caption


def _examples(pipe: SkyReelsV4Pipeline) -> list[tuple[str, dict, GenerationOutput]]:
    video, audio, caption = _world_clip()
    keep = torch.zeros(32, 32, dtype=torch.bool)
    keep[:, :16] = True
    cases = [
        ("i2av: first frame given", {"task": "i2av", "image": video[:, 0]}),
        (
            "interpolate: first + last",
            {"task": "interpolate", "image": video[:, 0], "last_image": video[:, -1]},
        ),
        ("extend: 9-frame prefix", {"task": "extend", "video": video[:, :9], "num_frames": 17}),
        ("edit: left half kept", {"task": "edit", "video": video, "edit_mask": keep}),
        ("v2a: video given", {"task": "v2a", "video": video}),
        ("a2v: audio given", {"task": "a2v", "audio": audio, "audio_sample_rate": 16000, "num_frames": 17}),
    ]
    rows = []
    for title, fields in cases:
        out = pipe(GenerationRequest(prompt=caption, seed=1, **fields), progress=False)
        rows.append((title, fields, out))
    return rows


def render_task_montage(path: str | os.PathLike[str], pipe: SkyReelsV4Pipeline | None = None) -> Path:
    """One row per task: the given frames, the output frames, the output (and given) waveform."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pipe = demo_pipeline() if pipe is None else pipe
    rows = _examples(pipe)
    picks = [0, 4, 8, 12, 16]
    figure = Figure(figsize=(2 * len(picks) * 0.9 + 3.6, 1.25 * len(rows) + 0.4), dpi=110)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(len(rows), 2 * len(picks) + 1, width_ratios=[1] * (2 * len(picks)) + [3.2])
    for r, (title, fields, out) in enumerate(rows):
        given = fields.get("video")
        if given is None and "image" in fields:
            given = torch.full((3, 17, 32, 32), -1.0)
            given[:, 0] = fields["image"]
            if "last_image" in fields:
                given[:, -1] = fields["last_image"]
        if given is not None and "edit_mask" in fields:
            given = torch.where(fields["edit_mask"], given, torch.full_like(given, -1.0))
        panels = [("in", given), ("out", out.video)]
        for block, (label, video) in enumerate(panels):
            frames = None if video is None else frames_to_uint8(video)
            for c, index in enumerate(picks):
                ax = figure.add_subplot(grid[r, block * len(picks) + c])
                ax.set_xticks([])
                ax.set_yticks([])
                if frames is not None and index < len(frames):
                    ax.imshow(frames[index], interpolation="nearest")
                else:
                    ax.imshow(np.full((32, 32, 3), 235, np.uint8))
                if r == len(rows) - 1:
                    ax.set_xlabel(f"{label} f{index}", fontsize=6, labelpad=1)
                if c == 0 and block == 0:
                    ax.set_title(title, fontsize=7, loc="left")
        ax = figure.add_subplot(grid[r, 2 * len(picks)])
        wave = out.waveform()[0]
        ax.plot(np.arange(len(wave)) / out.sample_rate, wave, linewidth=0.4, color="tab:blue", label="out")
        if "audio" in fields:
            given_wave = fields["audio"][0].numpy()
            ax.plot(
                np.arange(len(given_wave)) / 16000, given_wave, linewidth=0.4, color="tab:orange", label="in"
            )
        ax.set_ylim(-1, 1)
        ax.tick_params(labelsize=5)
        ax.legend(fontsize=5, loc="upper right")
    figure.suptitle(
        "tiny pipeline, random weights: generated regions are noise, conditioned content is kept exactly",
        fontsize=8,
    )
    target = Path(path)
    with atomic_path(target, ".png") as temp:
        figure.savefig(temp, format="png")
    return target


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1 or not argv[0].endswith(".png"):
        print("usage: python -m skyreels_v4.pipeline.montage OUT.png", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    print(render_task_montage(argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
