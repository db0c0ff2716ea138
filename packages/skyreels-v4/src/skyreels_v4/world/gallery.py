"""Render world clips to files: ``python -m skyreels_v4.world.gallery --out DIR --num-clips N --seed S``.

For clip ``i`` it writes ``clip_{i:03d}.mp4`` (H.264 + AAC), ``clip_{i:03d}.wav`` and
``clip_{i:03d}.json`` (caption, labels, ground truth), then ``montage.png`` (the first
``--montage-clips`` clips) and ``gallery.json`` (the configuration and the file list). Every
file is written atomically. Clip ``i`` is item ``i`` of ``ProceduralAVDataset(config, seed=S,
split=...)``, so the files and the dataset agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from skyreels_v4.cli import nonnegative_int, positive_float, positive_int
from skyreels_v4.runs.preflight import check_writable
from skyreels_v4.world.clip import WorldClip, make_clip
from skyreels_v4.world.config import WorldConfig
from skyreels_v4.world.media import atomic_path, write_mp4, write_wav
from skyreels_v4.world.montage import write_montage
from skyreels_v4.world.physics import Wall
from skyreels_v4.world.split import WorldSplit


def build_parser() -> argparse.ArgumentParser:
    defaults = WorldConfig()
    parser = argparse.ArgumentParser(
        prog="python -m skyreels_v4.world.gallery",
        description="Render clips of the procedural audio-visual world to .mp4/.wav/.json and a montage PNG.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument("--num-clips", type=positive_int, default=8, help="clips to render (default 8)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--split", choices=[s.value for s in WorldSplit], default=WorldSplit.TRAIN.value)
    parser.add_argument("--size", type=positive_int, default=defaults.size, help="canvas side in pixels")
    parser.add_argument("--fps", type=positive_float, default=defaults.fps)
    parser.add_argument("--num-frames", type=positive_int, default=defaults.num_frames)
    parser.add_argument("--sample-rate", type=positive_int, default=defaults.sample_rate)
    parser.add_argument("--audio-channels", type=int, choices=(1, 2), default=defaults.audio_channels)
    parser.add_argument("--max-objects", type=positive_int, default=defaults.max_objects)
    parser.add_argument("--no-antialias", action="store_true", help="draw hard edges")
    parser.add_argument(
        "--montage-clips", type=nonnegative_int, default=6, help="clips shown in montage.png (0: none)"
    )
    parser.add_argument(
        "--montage-frames", type=positive_int, default=6, help="frames per clip in montage.png"
    )
    parser.add_argument("--no-mp4", action="store_true", help="skip the .mp4 files")
    return parser


def clip_record(clip: WorldClip) -> dict:
    """JSON-ready description of a clip: caption, labels and ground truth."""
    scene, truth = clip.scene, clip.truth
    return {
        "index": clip.index,
        "seed": clip.seed,
        "split": clip.split.value,
        "caption": clip.caption,
        "background": scene.background.value,
        "has_bgm": scene.has_bgm,
        "objects": [
            {
                "colour": obj.colour.value,
                "shape": obj.shape.value,
                "pitch_hz": obj.shape.pitch_hz,
                "size": obj.size,
                "start": list(obj.start),
                "velocity": list(obj.velocity),
            }
            for obj in scene.objects
        ],
        "labels": {key: value.tolist() for key, value in clip.labels().items()},
        "wall_hits": [
            {"time_s": float(t), "object": int(n), "wall": Wall(int(w)).name.lower(), "sounded": bool(s)}
            for t, n, w, s in zip(truth.hit_times, truth.hit_objects, truth.hit_walls, truth.hit_sounded)
        ],
        "positions": truth.positions.round(6).tolist(),
    }


def _write_json(path: Path, payload: dict) -> None:
    with atomic_path(path, ".json") as temp:
        temp.write_text(json.dumps(payload, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the gallery command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        config = WorldConfig(
            size=args.size,
            fps=args.fps,
            num_frames=args.num_frames,
            sample_rate=args.sample_rate,
            audio_channels=args.audio_channels,
            max_objects=args.max_objects,
            antialias=not args.no_antialias,
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"world settings: {error}") from error
    split = WorldSplit(args.split)
    out: Path = args.out
    check_writable(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    files, montage_clips = [], []
    started = time.perf_counter()
    for index in range(args.num_clips):
        clip = make_clip(config, seed=args.seed, index=index, split=split)
        stem = f"clip_{index:03d}"
        if not args.no_mp4:
            write_mp4(out / f"{stem}.mp4", clip.frames, config.fps, clip.audio, config.sample_rate)
        write_wav(out / f"{stem}.wav", clip.audio, config.sample_rate)
        _write_json(out / f"{stem}.json", clip_record(clip))
        files.append(stem)
        if index < args.montage_clips:
            montage_clips.append(clip)
        print(f"{stem}: {clip.caption}")
    if montage_clips:
        write_montage(out / "montage.png", montage_clips, frames_per_clip=args.montage_frames)
    _write_json(
        out / "gallery.json",
        {
            "config": dataclasses.asdict(config),
            "seed": args.seed,
            "split": split.value,
            "clips": files,
            "montage": "montage.png" if montage_clips else None,
        },
    )
    elapsed = time.perf_counter() - started
    print(f"wrote {len(files)} clips to {os.fspath(out)} in {elapsed:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
