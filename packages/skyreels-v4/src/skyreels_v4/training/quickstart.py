"""The CPU quickstart (the README's main job): learn the procedural audio-visual world, then generate.

``skyreels-v4 quickstart --out outputs/quickstart`` (about 10 minutes on 2 CPU cores):

1. codecs: a zero-training, exactly invertible video codec (causal 4x time, 4x4 space pixel-unshuffle),
   a zero-training audio codec (STFT magnitudes at 16 kHz, Griffin-Lim decode; ``--audio-codec dct``:
   the exactly invertible framed DCT) and the embedded text encoder: nothing to download, nothing to
   pre-train (``--video-codec tiny`` trains the small learned video autoencoder first instead);
2. latent caches of training clips (plus one-frame clips, ``--train-images``) and validation clips;
3. the tiny joint model trained on a task mixture (t2av, v2a, a2v, i2v, extension, references; T2I on
   the one-frame clips) with x0 prediction and the sampler's time shift in the training σ, within a
   time budget, with a progress bar, checkpoints and loss curves;
4. export of a complete model folder (``model/``), usable by ``skyreels-v4 generate``;
5. generation for held-out prompts (including held-out colour-shape pairs): t2av and v2a clips as .mp4
   with sound, a montage, and the metrics report (``report.md`` / ``metrics.json``).

Rerunning the command with the same arguments resumes training from the last checkpoint.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyreels_v4.errors import SkyReelsError
from skyreels_v4.io import atomic_write_json

if TYPE_CHECKING:
    from skyreels_v4.training.stages import StageTrainingModule

__all__ = [
    "QuickstartSettings",
    "identity_for",
    "main",
    "run_quickstart",
    "saved_identity",
    "training_module",
]


#: The clip batches' task mixture (``skyreels_v4.training.tasks``); the one-frame clips are always T2I.
DEFAULT_TASKS = "t2av=0.5,v2a=0.15,a2v=0.1,image_to_video=0.1,video_extension=0.1,image_reference=0.05"

#: Defaults of each preset (explicit flags override them). ``quick`` is the README's main job (at most
#: 10 minutes on 2 CPU cores); ``evidence`` is the longer run of docs/training.md (3 s clips, more data,
#: 25 minutes of training so that the whole run stays within 30 minutes, more held-out clips).
PRESETS: dict[str, dict[str, float | int | str]] = {
    "quick": {
        "minutes": 6.0,
        "num_train_clips": 512,
        "num_eval_clips": 8,
        "size": 32,
        "frames": 33,
        "max_objects": 2,
        "learning_rate": 1e-3,
        "train_shift": 3.0,
        "train_images": 2048,
        "pooled_text": 32,
        "video_patch": 1,
        "lr_decay_steps": 0,
        "audio_codec": "spectrogram",
        "audio_weight": 1.0,
        "task_weights": DEFAULT_TASKS,
        "video_guidance": 3.0,
        "audio_guidance": 3.0,
    },
    "evidence": {
        "minutes": 25.0,
        "num_train_clips": 1024,
        "num_eval_clips": 24,
        "size": 32,
        "frames": 49,
        "max_objects": 2,
        "learning_rate": 1e-3,
        "train_shift": 3.0,
        "train_images": 4096,
        "pooled_text": 32,
        "video_patch": 1,
        "lr_decay_steps": 0,
        "audio_codec": "spectrogram",
        "audio_weight": 1.0,
        "task_weights": DEFAULT_TASKS,
        "video_guidance": 3.0,
        # 6 lifts pitch adherence (v2a-only model: 0.87 -> 0.99) without costing colour; docs/training.md
        "audio_guidance": 6.0,
    },
}


class QuickstartSettings(argparse.Namespace):
    out: str
    preset: str
    max_objects: int
    learning_rate: float
    minutes: float
    num_train_clips: int
    num_eval_clips: int
    size: int
    frames: int
    batch_size: int
    train_frames: int | None
    max_steps: int | None
    steps: int
    video_guidance: float
    audio_guidance: float
    seed: int
    video_codec: str
    video_temporal_factor: int
    audio_codec: str
    audio_weight: float
    task_weights: str
    prediction: str
    train_shift: float
    train_images: int
    pooled_text: int
    video_patch: int
    model_dim: int
    lr_decay_steps: int
    no_av_cross_attention: bool
    audio_alignment: str
    exchange_order: str
    exchange_window: float | None
    frame_position: int
    audio_phase: int
    audio_onset_weight: float
    timestep_sharing: str
    ema_decay: float


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skyreels-v4 quickstart",
        description="Train the tiny joint model on the procedural world, then generate clips with sound.",
    )
    parser.add_argument("--out", default="outputs/quickstart", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default="quick",
        help="defaults of the options below: quick (<= 10 min, the main job) or evidence (longer; "
        "docs/training.md) (default: %(default)s)",
    )
    options = (
        ("--minutes", float, "training time budget in minutes"),
        ("--num-train-clips", int, "training clips"),
        ("--num-eval-clips", int, "held-out clips scored per split"),
        ("--size", int, "frame side in pixels"),
        ("--frames", int, "frames per clip at 16 fps, 1 + 4k"),
        ("--max-objects", int, "objects per clip, 1..max"),
        ("--learning-rate", float, "AdamW learning rate"),
        (
            "--lr-decay-steps",
            int,
            "cosine decay of the learning rate to 0.1x over this many steps (0: constant)",
        ),
    )
    for flag, kind, text in options:
        parser.add_argument(flag, type=kind, default=None, help=f"{text} (default: from --preset)")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop training at this global step even if time is left (a machine-independent budget; "
        "a rerun with a larger value or none continues the run) (default: none, the time budget alone)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="clips per step (default: %(default)s)")
    parser.add_argument(
        "--train-frames",
        type=int,
        default=None,
        help="frames per training clip, 1 + 4k (shorter clips make cheaper steps; the generated clips keep "
        "--frames) (default: --frames)",
    )
    parser.add_argument(
        "--steps", type=int, default=16, help="sampling steps when generating (default: %(default)s)"
    )
    for modality in ("video", "audio"):
        parser.add_argument(
            f"--{modality}-guidance",
            type=float,
            default=None,
            help=f"{modality} guidance scale when generating (1 = off; a sampling setting, so a finished run "
            "can be rescored with another one by `skyreels-v4 evaluate`) (default: from --preset)",
        )
    parser.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    parser.add_argument(
        "--video-codec", choices=("pixel", "tiny"), default="pixel", help="video codec (default: %(default)s)"
    )
    parser.add_argument(
        "--video-temporal-factor",
        type=int,
        choices=(1, 2, 4),
        default=4,
        help="frames per latent frame of the pixel codec after the first (4: like the paper's VAEs; 1: one "
        "latent frame per video frame, so the exchange sees each frame's time) (default: %(default)s)",
    )
    parser.add_argument(
        "--audio-codec",
        choices=("spectrogram", "dct"),
        default=None,
        help="audio codec: spectrogram (companded STFT magnitudes, Griffin-Lim decode; phase-free, so "
        "the model can learn it) or dct (framed DCT, exactly invertible, signed) (default: from --preset)",
    )
    parser.add_argument(
        "--audio-weight",
        type=float,
        default=None,
        help="weight of the audio loss against the video loss (eq. 6) (default: from --preset)",
    )
    parser.add_argument(
        "--task-weights",
        default=None,
        metavar="TASK=W,...",
        help="task mixture of the clip batches, e.g. 't2av=0.5,v2a=0.5' (names: skyreels_v4.training.tasks) "
        "(default: from --preset)",
    )
    parser.add_argument(
        "--prediction",
        choices=("x0", "x0_skip", "velocity", "noise"),
        default="x0",
        help="what the network predicts (skyreels_v4.model.PredictionType) (default: %(default)s)",
    )
    parser.add_argument(
        "--train-shift",
        type=float,
        default=None,
        help="time shift of the training σ distribution (logit-normal), 1 = none; the sampler uses 3 "
        "(default: from --preset)",
    )
    parser.add_argument(
        "--train-images",
        type=int,
        default=None,
        help="one-frame clips (the first frames of other world clips, T2I) added to the training cache, "
        "as Table 1's image-video stages mix them (default: from --preset)",
    )
    parser.add_argument(
        "--pooled-text",
        type=int,
        default=None,
        help="width of the text encoder's pooled prompt vector, added to both branches' timestep "
        "modulation (0: none, tokens only) (default: from --preset)",
    )
    parser.add_argument(
        "--video-patch",
        type=int,
        choices=(1, 2),
        default=None,
        help="spatial patch of the video tokens in latent pixels (1: one token per latent pixel, 4x the "
        "tokens of 2) (default: from --preset)",
    )
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=0.99,
        help="decay of the weights' exponential moving average that the model folder exports (0.99 "
        "averages about the last 100 steps, 0.999 the last 1000) (default: %(default)s)",
    )
    parser.add_argument(
        "--model-dim",
        type=int,
        default=128,
        help="width of the joint model's blocks, a multiple of 32 (heads of width 32: the video RoPE's "
        "8 + 12 + 12 channels) (default: %(default)s)",
    )
    ablations = parser.add_argument_group("ablations (switches of the same model; docs/training.md)")
    ablations.add_argument(
        "--no-av-cross-attention",
        action="store_true",
        help="no audio-video cross-attention (the branches never exchange; sync should fall to chance)",
    )
    ablations.add_argument(
        "--audio-alignment",
        choices=("ratio", "temporal_channels_only"),
        default="ratio",
        help="audio RoPE alignment policy (docs/av-rope.md) (default: %(default)s)",
    )
    ablations.add_argument(
        "--exchange-order",
        choices=("sequential", "parallel"),
        default="sequential",
        help="order of the two cross-attentions of eq. 4-5 (default: %(default)s)",
    )
    ablations.add_argument(
        "--exchange-window",
        type=float,
        default=None,
        metavar="W",
        help="time-local eq. 5: each audio token reads only the video latent frames within W of its own "
        "time, and back (docs/decisions/0013-time-local-exchange.md) (default: the whole clip)",
    )
    ablations.add_argument(
        "--frame-position",
        type=int,
        default=0,
        metavar="K",
        help="give every video token K sine / cosine frequencies of its row and column in the frame "
        "(zero-initialised; RoPE alone is relative, so nothing else tells a token where the frame's edges "
        "are; docs/decisions/0014-frame-position.md) (default: 0, none, as the paper)",
    )
    ablations.add_argument(
        "--audio-phase",
        type=int,
        default=0,
        metavar="K",
        help="give every audio token K sine / cosine frequencies of its phase between two video latent "
        "frames (zero-initialised; RoPE alone is relative, so a token in silence cannot tell where it "
        "sits; docs/decisions/0015-audio-time-phase.md) (default: 0, none, as the paper)",
    )
    ablations.add_argument(
        "--audio-onset-weight",
        type=float,
        default=0.0,
        metavar="A",
        help="weigh the audio loss towards the tokens where the clip's sound starts or stops, by "
        "1 + A x (its change / the clip's mean change) (JointTrainingModule's audio_onset_weight) "
        "(default: 0, every token alike, as the paper)",
    )
    ablations.add_argument(
        "--timestep-sharing",
        choices=("shared", "independent"),
        default="shared",
        help="one σ for both modalities of a training sample (eq. 6) or one each, so that joint samples "
        "also train each modality from a cleaner or noisier other one (default: %(default)s, as the paper)",
    )
    return parser


def _apply_preset(settings: QuickstartSettings) -> QuickstartSettings:
    for key, value in PRESETS[settings.preset].items():
        if getattr(settings, key, None) is None:
            setattr(settings, key, value)
    if getattr(settings, "train_frames", None) == settings.frames:
        settings.train_frames = None  # the same run as without the flag
    return settings


def _check(settings: QuickstartSettings) -> None:
    max_steps = getattr(settings, "max_steps", None)
    train_frames = getattr(settings, "train_frames", None)
    model_dim = getattr(settings, "model_dim", 128)
    ema_decay = getattr(settings, "ema_decay", 0.99)
    checks = (
        (
            "--max-steps",
            max_steps,
            max_steps is None
            or (not isinstance(max_steps, bool) and isinstance(max_steps, int) and max_steps > 0),
            "a positive number of steps",
        ),
        (
            "--minutes",
            settings.minutes,
            0 < settings.minutes <= 24 * 60 and math.isfinite(settings.minutes),
            "in (0, 1440]",
        ),
        (
            "--num-train-clips",
            settings.num_train_clips,
            settings.num_train_clips >= settings.batch_size,
            ">= --batch-size",
        ),
        (
            "--num-eval-clips",
            settings.num_eval_clips,
            settings.num_eval_clips >= 2,
            ">= 2 (sync chance needs pairs)",
        ),
        ("--size", settings.size, settings.size >= 16 and settings.size % 8 == 0, "a multiple of 8, >= 16"),
        (
            "--frames",
            settings.frames,
            settings.frames >= 9 and (settings.frames - 1) % 4 == 0,
            "1 + 4k, >= 9",
        ),
        (
            "--train-frames",
            train_frames,
            train_frames is None or (train_frames >= 5 and (train_frames - 1) % 4 == 0),
            "1 + 4k, >= 5",
        ),
        ("--batch-size", settings.batch_size, settings.batch_size >= 1, ">= 1"),
        ("--max-objects", settings.max_objects, 1 <= settings.max_objects <= 8, "in [1, 8]"),
        (
            "--learning-rate",
            settings.learning_rate,
            0 < settings.learning_rate <= 1 and math.isfinite(settings.learning_rate),
            "in (0, 1]",
        ),
        ("--steps", settings.steps, 1 <= settings.steps <= 1000, "in [1, 1000]"),
        ("--seed", settings.seed, settings.seed >= 0, ">= 0"),
        ("--train-images", settings.train_images, settings.train_images >= 0, ">= 0"),
        ("--lr-decay-steps", settings.lr_decay_steps, settings.lr_decay_steps >= 0, ">= 0"),
        ("--ema-decay", ema_decay, 0 <= ema_decay < 1 and math.isfinite(ema_decay), "in [0, 1)"),
        ("--pooled-text", settings.pooled_text, 0 <= settings.pooled_text <= 4096, "in [0, 4096]"),
        (
            "--model-dim",
            model_dim,
            32 <= model_dim <= 4096 and model_dim % 32 == 0,
            "a multiple of 32 in [32, 4096]",
        ),
        (
            "--audio-weight",
            settings.audio_weight,
            0 < settings.audio_weight <= 1000 and math.isfinite(settings.audio_weight),
            "in (0, 1000]",
        ),
        (
            "--train-shift",
            settings.train_shift,
            0 < settings.train_shift <= 100 and math.isfinite(settings.train_shift),
            "in (0, 100]",
        ),
    )
    factor = getattr(settings, "video_temporal_factor", 4)
    if getattr(settings, "video_codec", "pixel") != "pixel" and factor != 4:
        raise SkyReelsError(
            f"--video-temporal-factor: {factor} applies to the pixel codec only; got --video-codec "
            f"{settings.video_codec}"
        )
    for modality in ("video", "audio"):
        scale = getattr(settings, f"{modality}_guidance", 3.0)
        ok = 0 <= scale <= 50 and math.isfinite(scale)
        checks += ((f"--{modality}-guidance", scale, ok, "in [0, 50]"),)
    window = getattr(settings, "exchange_window", None)
    if window is not None:
        ok = 0 < window <= 1000 and math.isfinite(window)
        checks += (("--exchange-window", window, ok, "in (0, 1000]"),)
    frame_position = getattr(settings, "frame_position", 0)
    checks += (("--frame-position", frame_position, 0 <= frame_position <= 16, "in [0, 16]"),)
    phase = getattr(settings, "audio_phase", 0)
    checks += (("--audio-phase", phase, 0 <= phase <= 16, "in [0, 16]"),)
    onset = getattr(settings, "audio_onset_weight", 0.0)
    checks += (("--audio-onset-weight", onset, 0 <= onset <= 100 and math.isfinite(onset), "in [0, 100]"),)
    for name, value, ok, expected in checks:
        if not ok:
            raise SkyReelsError(f"{name}: expected {expected}, got {value!r}")
    task_weights(settings.task_weights)


def task_weights(text: str) -> dict[str, float]:
    """``'t2av=0.5,v2a=0.5'`` -> ``{'t2av': 0.5, 'v2a': 0.5}``, checked like the module's mixture."""
    from skyreels_v4.training.tasks import parse_task_mixture

    weights: dict[str, float] = {}
    for part in str(text).split(","):
        name, sep, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if not sep or weight is None or name.strip() in weights:
            raise SkyReelsError(
                f"--task-weights: expected comma-separated TASK=WEIGHT pairs, each task once, got {text!r}"
            )
        weights[name.strip()] = weight
    try:
        parse_task_mixture(weights)
    except SkyReelsError as error:
        raise SkyReelsError(f"--task-weights: {error}") from None
    return weights


def run_quickstart(settings: QuickstartSettings) -> dict:
    """Run every step (module docstring); returns the metrics."""
    from itertools import chain

    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger

    from skyreels_v4.io import atomic_write_text
    from skyreels_v4.pipeline import GenerationDefaults, SamplingConfig, SkyReelsV4Pipeline
    from skyreels_v4.runs.checkpoints import AtomicCheckpointIO
    from skyreels_v4.runs.recipe import find_last_checkpoint
    from skyreels_v4.text import EmbeddedTextEncoder, EmbeddedTextEncoderConfig
    from skyreels_v4.training.cache import CACHE_INDEX, build_latent_cache, world_samples
    from skyreels_v4.training.data import LatentCacheDataModule
    from skyreels_v4.training.evaluate import (
        EVALUATION_SEED_OFFSET,
        evaluate_splits,
        json_ready,
        plot_loss_curves,
        splits_report,
    )
    from skyreels_v4.training.stages import image_samples
    from skyreels_v4.vae import FrameAudioCodec, PixelShuffleVideoCodec, SpectrogramAudioCodec
    from skyreels_v4.world import WorldConfig, WorldSplit

    if getattr(settings, "preset", None) is not None:
        _apply_preset(settings)
    _check(settings)
    started = time.monotonic()
    root = Path(settings.out)
    _check_same_run(settings, root)
    root.mkdir(parents=True, exist_ok=True)
    identity = _identity(settings)  # the model-shaping settings, with defaults for absent ones
    atomic_write_json(root / SETTINGS_FILE, identity)
    world = WorldConfig(
        size=settings.size,
        num_frames=settings.frames,
        sample_rate=16000,
        fps=16.0,
        max_objects=settings.max_objects,
    )
    # Training clips may be shorter than the generated ones (--train-frames): RoPE positions are relative.
    train_world = replace(world, num_frames=int(identity["train_frames"] or settings.frames))
    torch.manual_seed(settings.seed)

    # 1. Codecs and text encoder.
    # Both companded by a cube root: the world's sparse blips become latents of a few units. The
    # spectrogram codec drops the phase, whose sign flips made the DCT latents' conditional mean silent
    # (docs/decisions/0012-spectrogram-audio-codec.md).
    if identity["audio_codec"] == "spectrogram":
        audio_codec = SpectrogramAudioCodec(sample_rate=16000, hop_length=256, n_fft=512)
    else:
        audio_codec = FrameAudioCodec(sample_rate=16000, hop_length=256, compression=1 / 3)
    pooled = int(identity["pooled_text"]) or None
    text_encoder = EmbeddedTextEncoder(
        EmbeddedTextEncoderConfig(dim=32, pooled_dim=pooled, seed=settings.seed)
    )
    if settings.video_codec == "tiny":
        from skyreels_v4.vae import TinyVideoAutoencoderConfig, train_tiny_video_autoencoder

        print("[1/5] training the tiny video autoencoder", flush=True)
        result = train_tiny_video_autoencoder(
            TinyVideoAutoencoderConfig(latent_channels=16),
            world,
            600,
            out=root / "video_vae",
            seed=settings.seed,
        )
        video_codec = result.model
    else:
        video_codec = PixelShuffleVideoCodec(
            temporal_factor=int(identity["video_temporal_factor"]), spatial_factor=4
        )

    # 2. Latent caches (kept when already complete).
    print("[2/5] caching latents of the procedural world", flush=True)
    caches = {}
    for name, split, length, seed in (
        ("train", WorldSplit.TRAIN, settings.num_train_clips, settings.seed),
        ("val", WorldSplit.TRAIN, 16, settings.seed + 1),
    ):
        folder = root / f"cache_{name}"
        if not (folder / CACHE_INDEX).exists():
            samples = world_samples(train_world, length=length, seed=seed, split=split)
            images = settings.train_images if name == "train" else 0
            if images:
                extra = image_samples(train_world, length=images, seed=seed + 7, split=split)
                samples = chain(samples, extra)
                length += images
            build_latent_cache(
                samples,
                folder,
                video_vae=video_codec,
                audio_vae=audio_codec,
                text_encoder=text_encoder,
                total=length,
            )
        caches[name] = folder

    # 3. Training within the time budget (resumes from the last checkpoint).
    print(f"[3/5] training the tiny joint model for up to {settings.minutes:g} min", flush=True)
    data = LatentCacheDataModule(
        cache_dir=str(caches["train"]),
        val_cache_dir=str(caches["val"]),
        batch_size=settings.batch_size,
        shuffle_seed=settings.seed,
    )
    module = training_module(
        identity,
        video_latent_channels=video_codec.latent_channels,
        audio_latent_channels=audio_codec.latent_channels,
        text_dim=text_encoder.dim,
    )
    checkpoints = root / "checkpoints"
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=-1 if getattr(settings, "max_steps", None) is None else int(settings.max_steps),
        max_time={"minutes": settings.minutes},
        gradient_clip_val=1.0,
        log_every_n_steps=10,
        val_check_interval=200,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        default_root_dir=str(root),
        logger=CSVLogger(str(root), name="logs"),  # one version per (re)run: history is kept
        callbacks=[
            # Always last.ckpt: Lightning's version counter would write last-v1.ckpt beside a last.ckpt
            # that a moved or copied run folder brings along, and a later rerun would resume the stale one.
            ModelCheckpoint(
                dirpath=str(checkpoints),
                save_last=True,
                save_top_k=0,
                every_n_train_steps=100,
                enable_version_counter=False,
            ),
            TQDMProgressBar(refresh_rate=10),
        ],
        plugins=[AtomicCheckpointIO()],  # a kill during a save leaves the previous checkpoint whole
        enable_model_summary=False,
    )
    last = find_last_checkpoint(trainer)  # the recipes' rule: the newest last*.ckpt
    trainer.fit(module, data, ckpt_path=None if last is None else str(last))
    sessions = sorted((root / "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[-1]))
    plot_loss_curves([p / "metrics.csv" for p in sessions], root / "loss_curves.png")

    # 4. Export a complete model folder.
    print("[4/5] exporting the model folder", flush=True)
    pipeline = SkyReelsV4Pipeline(
        transformer=module.export_transformer(),
        video_vae=video_codec,
        audio_vae=audio_codec,
        text_encoder=text_encoder,
        sampling=SamplingConfig(
            num_steps=settings.steps,
            shift=3.0,
            video_guidance=getattr(settings, "video_guidance", 3.0),
            audio_guidance=getattr(settings, "audio_guidance", 3.0),
        ),
        defaults=GenerationDefaults(
            num_frames=settings.frames, height=settings.size, width=settings.size, fps=16.0
        ),
    )
    pipeline.save_pretrained(root / "model")

    # 5. Generate held-out prompts and score them: new clips of seen colour-shape pairs, and clips with
    #    a colour-shape pair never seen in training (compositional generalisation), reported apart.
    print("[5/5] generating held-out prompts (t2av, v2a) and scoring them", flush=True)
    results = evaluate_splits(
        pipeline,
        world=world,
        out_dir=root / "samples",
        num_clips=settings.num_eval_clips,
        seed=settings.seed + EVALUATION_SEED_OFFSET,
    )
    atomic_write_json(root / "metrics.json", {"steps": int(trainer.global_step), **json_ready(results)})
    minutes = (time.monotonic() - started) / 60
    switches = _ablation_label(settings)
    report = (
        f"# Quickstart report ({settings.preset}{', ' + switches if switches else ''})\n\n"
        f"Trained for {trainer.global_step} steps ({settings.num_train_clips} clips of "
        f"{train_world.num_frames} frames at 16 fps, {settings.size}x{settings.size}, "
        f"1-{settings.max_objects} objects); whole run "
        f"{minutes:.1f} min. Sampling: {pipeline.sampling.num_steps} steps, guidance video "
        f"{pipeline.sampling.video_guidance:g} / audio {pipeline.sampling.audio_guidance:g}.\n\n"
        + splits_report(root / "samples", results, settings.num_eval_clips)
        + "\nFiles: `model/` (load with `SkyReelsV4Pipeline.from_pretrained` or `skyreels-v4 generate`; "
        "rescore it with other sampling settings with `skyreels-v4 evaluate`), `samples/*/*.mp4`, "
        "`samples/*/montage.png`, `loss_curves.png`, `metrics.json`.\n"
    )
    atomic_write_text(root / "report.md", report)
    print(report, flush=True)
    return results


#: Settings that shape the trained model: a rerun in the same folder must keep them (it resumes).
_IDENTITY = (
    "num_train_clips",
    "size",
    "frames",
    "train_frames",
    "max_objects",
    "learning_rate",
    "batch_size",
    "seed",
    "video_codec",
    "video_temporal_factor",
    "audio_codec",
    "audio_weight",
    "task_weights",
    "prediction",
    "train_shift",
    "train_images",
    "pooled_text",
    "video_patch",
    "model_dim",
    "lr_decay_steps",
    "no_av_cross_attention",
    "audio_alignment",
    "exchange_order",
    "exchange_window",
    "frame_position",
    "audio_phase",
    "audio_onset_weight",
    "timestep_sharing",
    "ema_decay",
)
SETTINGS_FILE = "quickstart_settings.json"


#: An identity key's value for a settings object (or a saved settings file) from before the key existed:
#: the behaviour of the quickstart at that time.
_IDENTITY_DEFAULTS: dict[str, object] = {
    "no_av_cross_attention": False,
    "audio_alignment": "ratio",
    "exchange_order": "sequential",
    "exchange_window": None,
    "frame_position": 0,
    "audio_onset_weight": 0.0,
    "audio_phase": 0,
    "timestep_sharing": "shared",
    "ema_decay": 0.99,
    "prediction": "x0",
    "train_shift": 1.0,
    "train_images": 0,
    "pooled_text": 0,
    "video_patch": 2,
    "model_dim": 128,
    "lr_decay_steps": 0,
    "audio_codec": "dct",
    "video_temporal_factor": 4,
    "audio_weight": 1.0,
    "task_weights": DEFAULT_TASKS,
    "train_frames": None,
}


def training_module(
    identity: dict[str, Any], *, video_latent_channels: int, audio_latent_channels: int, text_dim: int
) -> StageTrainingModule:
    """The quickstart's training module for a run identity (``quickstart_settings.json``: the
    settings that shape the model) and the latent widths of its cache; ``run_quickstart`` trains it,
    ``benchmarks/training_step_wall.py`` times it."""
    from skyreels_v4.training.stages import StageTrainingModule

    # One-frame batches (the --train-images clips) are T2I; every other batch draws from `tasks`.
    return StageTrainingModule(
        image_tasks={"t2v": 1.0},
        preset="tiny",
        video_latent_channels=video_latent_channels,
        audio_latent_channels=audio_latent_channels,
        text_dim=text_dim,
        model_overrides={
            "dim": int(identity["model_dim"]),
            "num_heads": int(identity["model_dim"]) // 32,
            "video_rope_axes": [8, 12, 12],
            "pooled_text_dim": int(identity["pooled_text"]) or None,
            "video_patch_size": [1, int(identity["video_patch"]), int(identity["video_patch"])],
            "video_frame_position": int(identity["frame_position"]),
            "audio_time_phase": int(identity["audio_phase"]),
        },
        prediction=identity["prediction"],
        tasks=task_weights(str(identity["task_weights"])),
        timestep_sampler={
            "distribution": "logit_normal",
            "shift": {"shift": float(identity["train_shift"])},
        },
        text_dropout=0.1,
        audio_weight=float(identity["audio_weight"]),
        audio_onset_weight=float(identity["audio_onset_weight"]),
        timestep_sharing=str(identity["timestep_sharing"]),
        ema_decay=float(identity["ema_decay"]),
        learning_rate=float(identity["learning_rate"]),
        warmup_steps=50,
        lr_decay_steps=int(identity["lr_decay_steps"]),
        seed=int(identity["seed"]),
        av_cross_attention=not identity["no_av_cross_attention"],
        audio_alignment=identity["audio_alignment"],
        exchange_order=identity["exchange_order"],
        exchange_window=identity["exchange_window"],
    )


def _identity(settings: QuickstartSettings) -> dict[str, object]:
    return {key: getattr(settings, key, _IDENTITY_DEFAULTS.get(key)) for key in _IDENTITY}


def identity_for(argv: Sequence[str] = ()) -> dict[str, object]:
    """The run identity that ``skyreels-v4 quickstart ARGV`` would train (presets applied, flags
    checked), without a run folder: e.g. ``training_module(identity_for(["--preset", "evidence"]),
    ...)`` builds the evidence model for a benchmark."""
    settings = _parser().parse_args(list(argv), namespace=QuickstartSettings())
    _check(_apply_preset(settings))
    return _identity(settings)


def saved_identity(root: str | os.PathLike[str]) -> dict[str, object]:
    """The run identity saved in the run folder ``root`` (``quickstart_settings.json``), with the
    defaults of keys added since it was written."""
    import json

    path = Path(root) / SETTINGS_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SkyReelsError(f"{path}: unreadable quickstart settings ({error}); remove the folder") from None
    return {**_IDENTITY_DEFAULTS, **saved}


def _check_same_run(settings: QuickstartSettings, root: Path) -> None:
    """A rerun resumes the run in ``root``; refuse one whose model-shaping settings differ (an
    ablation or another size belongs in its own ``--out``)."""
    if not (root / SETTINGS_FILE).exists():
        return
    saved = saved_identity(root)
    current = _identity(settings)
    changed = [
        f"{key} {saved.get(key)!r} -> {value!r}"
        for key, value in current.items()
        if not _same_setting(key, saved.get(key), value)
    ]
    if changed:
        raise SkyReelsError(
            f"--out {root}: holds a run made with other settings ({'; '.join(changed)}); rerunning resumes "
            "that run, so choose another --out for these settings"
        )


def _same_setting(key: str, saved: object, current: object) -> bool:
    """Equal settings; a task mixture compares by its weights, not its spelling."""
    if key == "task_weights" and isinstance(saved, str) and isinstance(current, str):
        try:
            return task_weights(saved) == task_weights(current)
        except SkyReelsError:
            return False
    return saved == current


def _ablation_label(settings: QuickstartSettings) -> str:
    """The ablation switches that differ from the default model, for the report's title."""
    parts = []
    if getattr(settings, "no_av_cross_attention", False):
        parts.append("no audio-video cross-attention")
    if getattr(settings, "audio_alignment", "ratio") != "ratio":
        parts.append(f"audio alignment {settings.audio_alignment}")
    if getattr(settings, "exchange_order", "sequential") != "sequential":
        parts.append(f"{settings.exchange_order} exchange")
    if getattr(settings, "model_dim", 128) != 128:
        parts.append(f"model width {settings.model_dim}")
    if getattr(settings, "video_temporal_factor", 4) != 4:
        parts.append(f"video temporal factor {settings.video_temporal_factor}")
    if getattr(settings, "exchange_window", None) is not None:
        parts.append(f"exchange within {settings.exchange_window:g} latent frames")
    if getattr(settings, "frame_position", 0):
        parts.append(f"frame position ({settings.frame_position} frequencies)")
    if getattr(settings, "audio_phase", 0):
        parts.append(f"audio time phase ({settings.audio_phase} frequencies)")
    if getattr(settings, "audio_onset_weight", 0.0):
        parts.append(f"audio onset weight {settings.audio_onset_weight:g}")
    if getattr(settings, "ema_decay", 0.99) != 0.99:
        parts.append(f"EMA decay {settings.ema_decay:g}")
    if getattr(settings, "timestep_sharing", "shared") != "shared":
        parts.append(f"{settings.timestep_sharing} timesteps per modality")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    settings = parser.parse_args(list(argv) if argv is not None else None, namespace=QuickstartSettings())
    try:
        _check(_apply_preset(settings))
        _check_same_run(settings, Path(settings.out))
    except SkyReelsError as error:
        print(f"skyreels-v4 quickstart: error: {error}", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_quickstart(settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
