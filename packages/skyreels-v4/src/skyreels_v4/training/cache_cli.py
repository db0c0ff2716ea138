"""``skyreels-v4 cache``: build a latent cache (paper 4: training on precomputed latents) from a folder
of clips with ``captions.jsonl`` or from the procedural world.

    skyreels-v4 cache --input clips/ --output cache/ --video-vae pixel --audio-vae frame
    skyreels-v4 cache --world 512 --output cache/ --video-vae models/video_vae --text-encoder models/qwen

Components: ``--video-vae pixel`` (the zero-training pixel-unshuffle codec, 4x time, 4x4 space, as
the quickstart uses) or a saved codec folder (tiny video autoencoder or a diffusers Wan / HunyuanVideo
VAE; ``load_video_codec`` dispatches on its config.json); ``--audio-vae frame`` (the framed-DCT codec,
16 kHz, hop 256) or a saved audio codec folder; ``--text-encoder embedded`` (the embedded encoder,
width ``--text-dim``, seeded by ``--seed``) or a saved encoder folder (embedded, Hugging Face or
Qwen-VL; ``load_text_encoder``). A pipeline folder's ``video_vae/``, ``audio_vae/`` and
``text_encoder/`` are such folders, so a cache can match an existing model.

Rerunning the same command resumes an interrupted build (finished shards are kept and their clips
not decoded again) and leaves a finished cache as it is; different settings on the same folder are
refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from skyreels_v4.cli import nonnegative_int, positive_float, positive_int
from skyreels_v4.errors import PreflightError

__all__ = ["load_cache_components", "main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skyreels-v4 cache",
        description="Precompute video/audio latents and text embeddings into safetensors shards.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="folder with mp4/wav clips and captions.jsonl")
    source.add_argument("--world", type=positive_int, metavar="N", help="N clips of the procedural world")
    parser.add_argument("--output", required=True, help="cache folder")
    parser.add_argument("--video-vae", default="pixel", help="'pixel' or a saved video codec folder")
    parser.add_argument(
        "--audio-vae",
        default="frame",
        help="'frame' (framed DCT, exact), 'spectrogram' (STFT magnitudes, Griffin-Lim decode; what the "
        "quickstart trains on) or a saved audio codec folder",
    )
    parser.add_argument("--text-encoder", default="embedded", help="'embedded' or a saved encoder folder")
    parser.add_argument(
        "--text-dim", type=positive_int, default=32, help="width of --text-encoder embedded (default 32)"
    )
    parser.add_argument(
        "--num-frames",
        type=positive_int,
        default=None,
        help="cut clips to this many frames (default: each clip's longest 1 + k*temporal_factor)",
    )
    parser.add_argument(
        "--keyframe-scale",
        type=positive_int,
        default=None,
        metavar="S",
        help="paper 4.5's joint keyframes: cache the clips at 1/S of their size plus every full-size "
        "latent frame (model.keyframe_probability trains on them)",
    )
    parser.add_argument("--shard-size", type=positive_int, default=64, help="clips per shard (default 64)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="world and embedded-encoder seed")
    world = parser.add_argument_group("procedural world (with --world)")
    world.add_argument("--world-size", type=positive_int, default=32, help="frame side in pixels (32)")
    world.add_argument("--world-frames", type=positive_int, default=33, help="frames per clip (33)")
    world.add_argument("--world-fps", type=positive_float, default=16.0, help="frame rate (16)")
    world.add_argument("--world-sample-rate", type=positive_int, default=16000, help="audio rate (16000)")
    world.add_argument("--world-split", choices=("train", "heldout"), default="train", help="split (train)")
    parser.add_argument("--overwrite", action="store_true", help="start over in a folder made otherwise")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _folder(value: str, flag: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise PreflightError(
            f"{flag}: expected a built-in name or a saved folder, got {value!r} (no such folder)"
        )
    return path


def load_cache_components(
    *, video_vae: str, audio_vae: str, text_encoder: str, text_dim: int = 32, seed: int = 0
) -> tuple[Any, Any, Any]:
    """The (video codec, audio codec, text encoder) named on the command line (module docstring)."""
    from skyreels_v4.text import EmbeddedTextEncoder, EmbeddedTextEncoderConfig, load_text_encoder
    from skyreels_v4.vae import (
        FrameAudioCodec,
        PixelShuffleVideoCodec,
        SpectrogramAudioCodec,
        load_audio_codec,
        load_video_codec,
    )

    video = (
        PixelShuffleVideoCodec(temporal_factor=4, spatial_factor=4)
        if video_vae == "pixel"
        else load_video_codec(_folder(video_vae, "--video-vae"))
    )
    if audio_vae == "frame":
        audio = FrameAudioCodec(sample_rate=16000, hop_length=256)
    elif audio_vae == "spectrogram":
        audio = SpectrogramAudioCodec(sample_rate=16000, hop_length=256, n_fft=512)
    else:
        audio = load_audio_codec(_folder(audio_vae, "--audio-vae"))
    text = (
        EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=text_dim, seed=seed))
        if text_encoder == "embedded"
        else load_text_encoder(_folder(text_encoder, "--text-encoder"))
    )
    return video.eval(), audio.eval(), text.eval()


def _file_digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    from skyreels_v4.training.cache import (
        ExistingCache,
        LatentCache,
        build_latent_cache,
        folder_samples,
        read_caption_listing,
        world_samples,
    )

    args = _parser().parse_args(list(argv) if argv is not None else None)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    video, audio, text = load_cache_components(
        video_vae=args.video_vae,
        audio_vae=args.audio_vae,
        text_encoder=args.text_encoder,
        text_dim=args.text_dim,
        seed=args.seed,
    )
    existing = ExistingCache.OVERWRITE if args.overwrite else ExistingCache.RESUME
    if args.input is not None:
        rows = read_caption_listing(args.input)  # the whole listing is checked before any work
        listing = Path(args.input) / "captions.jsonl"
        source = {"kind": "folder", "captions_digest": _file_digest(listing), "num_frames": args.num_frames}
        total = len(rows)

        def samples(done: frozenset[str]) -> Any:
            return folder_samples(
                args.input, num_frames=args.num_frames, temporal_factor=int(video.temporal_factor), skip=done
            )

    else:
        from skyreels_v4.world import WorldConfig

        world = WorldConfig(
            size=args.world_size,
            num_frames=args.num_frames or args.world_frames,
            sample_rate=args.world_sample_rate,
            fps=args.world_fps,
        )
        source = {
            "kind": "world",
            "world": asdict(world),
            "length": args.world,
            "seed": args.seed,
            "split": args.world_split,
        }
        total = args.world

        def samples(done: frozenset[str]) -> Any:
            return world_samples(world, length=args.world, seed=args.seed, split=args.world_split, skip=done)

    root = build_latent_cache(
        samples,
        args.output,
        video_vae=video,
        audio_vae=audio,
        text_encoder=text,
        shard_size=args.shard_size,
        progress=not args.no_progress,
        total=total,
        source=source,
        existing=existing,
        keyframe_scale=args.keyframe_scale,
    )
    cache = LatentCache(root)
    shards = sum(len(b["shards"]) for b in cache.buckets.values())
    print(f"{root}: {len(cache)} clips in {len(cache.buckets)} buckets, {shards} shards")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
