"""A SkyReels-V4 pipeline folder from a HunyuanVideo checkpoint (paper 3.1: the video branch starts
from a pretrained text-to-video model; every layer it lacks starts at zero).

``transformer_from_hunyuan`` builds the composed transformer in memory:

- the video branch is sized from the checkpoint's tensor shapes (diffusers or official names), reads
  ``Concat(V, I, M)`` = ``2C + 1`` channels (eq. 7; the ``I`` and ``M`` columns of the patch embedding
  are zero) and gets eq. 4's text cross-attention in its single-stream blocks (zero output, as the
  presets place it);
- the audio branch has the same architecture (width, heads, depth, text widths) over the audio
  autoencoder's latent channels, freshly initialised from ``seed``; the eq. 5 exchanges are zero.

So the result reproduces the checkpoint's text-to-video output exactly (tests/test_hunyuan_parity.py).
``convert_hunyuan`` writes it as a pipeline folder (``model_index.json``, ``transformer/``,
``scheduler/``) and copies the named component folders in, after loading each one to check that it
fits the transformer. Everything is written beside ``out`` and renamed into place at the end, so a
failed conversion leaves nothing behind. ``main`` is ``skyreels-v4 convert``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from skyreels_av_rope import AudioTimeAlignment, RotaryConfig, audio_rotary_config
from skyreels_flow_matching import ScheduleForm
from skyreels_mmdit_blocks import (
    ImportReport,
    JointAudioVideoTransformerConfig,
    MMDiTBranchConfig,
    Modality,
    WeightImportError,
    infer_hunyuan_branch_config,
    load_hunyuan_video_weights,
    read_safetensors_directory,
)
from skyreels_v4.errors import ConfigMismatchError, FileFormatError, SkyReelsError
from skyreels_v4.io import atomic_write_json
from skyreels_v4.model.config_io import from_plain, to_plain
from skyreels_v4.model.transformer import SkyReelsV4Transformer

__all__ = [
    "DEFAULT_AUDIO_LATENT_CHANNELS",
    "convert_hunyuan",
    "hunyuan_joint_config",
    "main",
    "transformer_from_hunyuan",
]

#: Audio latent channels when no audio autoencoder is named (skyreels-audio-vae ``base``).
DEFAULT_AUDIO_LATENT_CHANNELS = 64
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _merge(base: dict[str, Any], changes: Mapping[str, Any], path: str) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if key not in out:
            raise ValueError(f"overrides: unknown key {path}{key}; expected one of {sorted(out)}")
        if isinstance(value, Mapping) and isinstance(out[key], dict):
            out[key] = _merge(out[key], value, f"{path}{key}.")
        else:
            out[key] = value
    return out


def hunyuan_joint_config(
    video: MMDiTBranchConfig,
    *,
    audio_latent_channels: int = DEFAULT_AUDIO_LATENT_CHANNELS,
    overrides: Mapping[str, Any] | None = None,
) -> JointAudioVideoTransformerConfig:
    """The joint config around a HunyuanVideo video branch config (``infer_hunyuan_branch_config``).

    ``overrides`` is nested plain data applied last (e.g. ``{"audio": {"num_single_blocks": 10}}``);
    unknown keys and bad values raise naming the key path.
    """
    if not isinstance(video, MMDiTBranchConfig) or video.modality is not Modality.VIDEO:
        raise TypeError(f"video: expected a video MMDiTBranchConfig, got {video!r}")
    if (
        isinstance(audio_latent_channels, bool)
        or not isinstance(audio_latent_channels, int)
        or audio_latent_channels < 1
    ):
        raise ValueError(f"audio_latent_channels: expected a positive int, got {audio_latent_channels!r}")
    c = video.out_channels
    if video.in_channels not in (c, 2 * c + 1):
        raise ConfigMismatchError(
            f"checkpoint: the patch embedding reads {video.in_channels} channels; expected C = {c} "
            f"(text-to-video) or 2C + 1 = {2 * c + 1} (Concat(V, I, M), eq. 7)"
        )
    single = tuple(range(video.num_dual_blocks, video.num_blocks))
    video = replace(video, in_channels=2 * c + 1, text_cross_attention_blocks=single)
    audio = replace(
        video,
        modality=Modality.AUDIO,
        in_channels=audio_latent_channels,
        out_channels=audio_latent_channels,
        patch_size=(1,),
        rope=audio_rotary_config(AudioTimeAlignment.RATIO, video.rope),
        guidance_embedding=False,
        text_cross_attention_blocks=(),
    )
    config = JointAudioVideoTransformerConfig(
        video=video, audio=audio, audio_alignment=AudioTimeAlignment.RATIO
    )
    if overrides:
        if not isinstance(overrides, Mapping):
            raise TypeError(f"overrides: expected a mapping, got {type(overrides).__name__}")
        plain = _merge(to_plain(config), overrides, "")
        config = from_plain(JointAudioVideoTransformerConfig, plain, name="overrides")
    return config


def _checkpoint_dtype(state_dict: Mapping[str, torch.Tensor]) -> torch.dtype:
    for tensor in state_dict.values():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def transformer_from_hunyuan(
    checkpoint: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    *,
    config_json: Mapping[str, Any] | None = None,
    rope: RotaryConfig | None = None,
    audio_latent_channels: int = DEFAULT_AUDIO_LATENT_CHANNELS,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> tuple[SkyReelsV4Transformer, ImportReport]:
    """A ``SkyReelsV4Transformer`` whose video branch holds a HunyuanVideo checkpoint (module doc).

    Args:
        checkpoint: a folder of ``*.safetensors`` (+ ``config.json``), diffusers or official names,
            or such a state dict (then ``config_json`` may carry diffusers' ``rope_axes_dim``).
        rope: the video RoPE when neither a diffusers config.json nor HunyuanVideo's head dim 128
            (-> axes 16/56/56, theta 256) gives it.
        audio_latent_channels: channels of the audio autoencoder's latents.
        overrides: nested plain-data changes of the joint config (``hunyuan_joint_config``).
        seed: initialisation of the new (audio) branch.
        dtype: of the result; None = the checkpoint's floating dtype.

    Raises:
        FileFormatError: the folder is missing or holds no usable checkpoint.
        ConfigMismatchError: the checkpoint does not fit the (overridden) config.
    """
    if isinstance(checkpoint, Mapping):
        state_dict = dict(checkpoint)
    else:
        folder = Path(checkpoint)
        if not folder.is_dir():
            raise FileFormatError(folder, "checkpoint: expected a folder of HunyuanVideo .safetensors files")
        try:
            state_dict, config_json = read_safetensors_directory(folder)
        except (WeightImportError, json.JSONDecodeError) as error:
            raise FileFormatError(folder, f"checkpoint: {error}") from error
    try:
        video = infer_hunyuan_branch_config(state_dict, config_json=config_json, rope=rope)
    except (WeightImportError, KeyError) as error:
        raise FileFormatError(
            Path(str(checkpoint)) if not isinstance(checkpoint, Mapping) else Path("<state dict>"),
            f"checkpoint: not a HunyuanVideo transformer ({error})",
        ) from error
    config = hunyuan_joint_config(video, audio_latent_channels=audio_latent_channels, overrides=overrides)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {seed!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SkyReelsV4Transformer(config)
    try:
        report = load_hunyuan_video_weights(model.video, state_dict)
    except WeightImportError as error:
        raise ConfigMismatchError(f"overrides/checkpoint: {error}") from error
    target = dtype if dtype is not None else _checkpoint_dtype(state_dict)
    del state_dict
    return model.to(target).eval(), report


def _component(kind: str, folder: str | os.PathLike[str]) -> tuple[Path, Any]:
    """Load a named component folder (its own loader validates it) and return it with its path."""
    path = Path(folder)
    if not path.is_dir():
        raise FileFormatError(path, f"{kind}: expected a saved {kind} folder, it does not exist")
    if kind == "video_vae":
        from skyreels_v4.vae import load_video_codec

        return path, load_video_codec(path)
    if kind == "audio_vae":
        from skyreels_v4.vae import load_audio_codec

        return path, load_audio_codec(path)
    from skyreels_v4.text import load_text_encoder

    return path, load_text_encoder(path)


def _default_sampling(config: JointAudioVideoTransformerConfig) -> Any:
    from skyreels_v4.pipeline.sampling import SamplingConfig

    if config.video.guidance_embedding:
        # HunyuanVideo text-to-video: distilled guidance 6, no video CFG, σ shift 7, 50 steps.
        # SHIFT_ONCE is the grid HunyuanVideoPipeline passes to its scheduler (docs/model.md).
        return SamplingConfig(
            num_steps=50,
            shift=7.0,
            schedule=ScheduleForm.SHIFT_ONCE,
            video_guidance=1.0,
            embedded_guidance=6.0,
        )
    return SamplingConfig(num_steps=50, shift=7.0, schedule=ScheduleForm.SHIFT_ONCE)


def convert_hunyuan(
    checkpoint_dir: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    video_vae: str | os.PathLike[str] | None = None,
    audio_vae: str | os.PathLike[str] | None = None,
    text_encoder: str | os.PathLike[str] | None = None,
    audio_latent_channels: int | None = None,
    rope: RotaryConfig | None = None,
    overrides: Mapping[str, Any] | None = None,
    sampling: Any | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
) -> Path:
    """Write a pipeline folder at ``out`` from a HunyuanVideo checkpoint and the named components.

    Layout: ``model_index.json``, ``transformer/`` (``SkyReelsV4Transformer.save_pretrained``),
    ``scheduler/`` (a ``SamplingConfig``; default: HunyuanVideo's embedded guidance 6, shift 7) and a
    copy of each named component folder (``video_vae/``, ``audio_vae/``, ``text_encoder/``, each in
    the format of ``skyreels_v4.vae`` / ``skyreels_v4.text``). Components not named are recorded as
    ``[null, null]`` in ``model_index.json``: ``SkyReelsV4Pipeline.from_pretrained`` loads them as None
    and a task that needs one names it (e.g. t2v runs without an audio VAE; t2av does not).

    Each component is loaded once to check it fits: the video VAE's latent channels must be the
    checkpoint's ``C``, the text encoder's widths the checkpoint's text and pooled widths; the audio
    branch is sized by the audio VAE (or ``audio_latent_channels``, default 64).

    Raises (nothing is left at ``out`` or beside it): ``FileFormatError`` for a missing or malformed
    input folder, ``ConfigMismatchError`` when the parts do not fit together, ``FileExistsError`` when
    ``out`` exists and ``overwrite`` is False, ``ValueError``/``TypeError`` for bad arguments.
    """
    target = Path(out)
    if target.exists() and not overwrite:
        raise FileExistsError(f"out: {target} exists; choose a new folder or pass overwrite=True")
    components: dict[str, tuple[Path, Any]] = {}
    for kind, folder in (("video_vae", video_vae), ("audio_vae", audio_vae), ("text_encoder", text_encoder)):
        if folder is not None:
            components[kind] = _component(kind, folder)
    if "audio_vae" in components:
        codec_channels = int(components["audio_vae"][1].latent_channels)
        if audio_latent_channels is not None and audio_latent_channels != codec_channels:
            raise ConfigMismatchError(
                f"audio_latent_channels: {audio_latent_channels} given, but the audio VAE at "
                f"{components['audio_vae'][0]} has {codec_channels} latent channels"
            )
        audio_latent_channels = codec_channels
    model, _ = transformer_from_hunyuan(
        checkpoint_dir,
        audio_latent_channels=audio_latent_channels or DEFAULT_AUDIO_LATENT_CHANNELS,
        rope=rope,
        overrides=overrides,
        seed=seed,
        dtype=dtype,
    )
    _check_fit(model, components)
    if sampling is None:
        sampling = _default_sampling(model.config)
    if model.config.video.guidance_embedding and sampling.embedded_guidance is None:
        raise ConfigMismatchError(
            "sampling.embedded_guidance: the checkpoint has a guidance embedding; set a value (e.g. 6.0)"
        )
    from skyreels_v4.pipeline.pipeline import GenerationDefaults

    index: dict[str, Any] = {
        "_class_name": "SkyReelsV4Pipeline",
        "_format_version": 1,
        "transformer": ["skyreels_v4.model", SkyReelsV4Transformer.CLASS_NAME],
        "video_vae": [None, None],
        "audio_vae": [None, None],
        "text_encoder": [None, None],
        "scheduler": ["skyreels_v4.pipeline", "SamplingConfig"],
        "defaults": to_plain(GenerationDefaults()),
    }
    for kind, (_, loaded) in components.items():
        package = "skyreels_v4.text" if kind == "text_encoder" else "skyreels_v4.vae"
        index[kind] = [package, type(loaded).__name__]
    components = {kind: (path, None) for kind, (path, _) in components.items()}  # free the loaded ones
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as error:
        raise PermissionError(f"out: cannot write beside {target} ({error.strerror or error})") from error
    try:
        model.save_pretrained(staging / "transformer", max_shard_size=max_shard_size)
        del model
        sampling.save_pretrained(staging / "scheduler")
        for kind, (source, _) in components.items():
            shutil.copytree(source, staging / kind)
        atomic_write_json(staging / "model_index.json", index)  # last: marks a complete folder
        _move_into_place(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_fit(model: SkyReelsV4Transformer, components: Mapping[str, tuple[Path, Any]]) -> None:
    video = model.config.video
    if "video_vae" in components:
        path, codec = components["video_vae"]
        if codec.latent_channels != model.video_latent_channels:
            raise ConfigMismatchError(
                f"video_vae: {path} has {codec.latent_channels} latent channels, the checkpoint's video "
                f"branch predicts {model.video_latent_channels}"
            )
    if "text_encoder" in components:
        path, encoder = components["text_encoder"]
        if encoder.dim != video.text_dim:
            raise ConfigMismatchError(
                f"text_encoder: {path} gives {encoder.dim}-wide states, the checkpoint reads {video.text_dim}"
            )
        if encoder.pooled_dim != video.pooled_text_dim:
            raise ConfigMismatchError(
                f"text_encoder: {path} gives a pooled vector of width {encoder.pooled_dim}, the checkpoint "
                f"reads {video.pooled_text_dim}"
            )


def _move_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        os.replace(staging, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    old.rmdir()
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


# -- command line --------------------------------------------------------------------------------


def _parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--set: expected KEY=JSON (e.g. audio.num_single_blocks=10), got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value  # a bare word is a string (e.g. exchange_order=parallel)
    return key.split("."), parsed


def _overrides(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        keys, value = _parse_override(item)
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set: {item!r} conflicts with an earlier --set of {key!r}")
        node[keys[-1]] = value
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skyreels-v4 convert",
        description=(
            "Build a SkyReels-V4 pipeline folder from a HunyuanVideo transformer checkpoint (diffusers or "
            "official safetensors names): the video branch is initialised from it, new layers start at "
            "zero, the audio branch is freshly initialised; the named component folders are copied in."
        ),
        epilog=(
            "example: skyreels-v4 convert --hunyuan hunyuan/transformer --video-vae vae "
            "--audio-vae audio_vae --text-encoder text_encoder --out skyreels-hunyuan"
        ),
    )
    parser.add_argument("--hunyuan", required=True, metavar="DIR", help="HunyuanVideo transformer folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="pipeline folder to write")
    parser.add_argument("--video-vae", metavar="DIR", help="saved skyreels_v4.vae video codec folder")
    parser.add_argument("--audio-vae", metavar="DIR", help="saved skyreels_v4.vae audio codec folder")
    parser.add_argument("--text-encoder", metavar="DIR", help="saved skyreels_v4.text encoder folder")
    parser.add_argument(
        "--audio-latent-channels", type=int, help="audio branch channels when no --audio-vae (default 64)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override a transformer config field, e.g. --set audio.num_single_blocks=10 (repeatable)",
    )
    parser.add_argument("--dtype", choices=sorted(_DTYPES), help="weights dtype (default: the checkpoint's)")
    parser.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default 5GB)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed of the audio branch")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``skyreels-v4 convert``: 0 on success; user errors print one line to stderr and return 2."""
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        folder = convert_hunyuan(
            args.hunyuan,
            out=args.out,
            video_vae=args.video_vae,
            audio_vae=args.audio_vae,
            text_encoder=args.text_encoder,
            audio_latent_channels=args.audio_latent_channels,
            overrides=_overrides(args.set),
            seed=args.seed,
            dtype=None if args.dtype is None else _DTYPES[args.dtype],
            max_shard_size=args.max_shard_size,
            overwrite=args.overwrite,
        )
    except (SkyReelsError, ValueError, TypeError, OSError) as error:
        message = " ".join(str(error).split())
        print(f"skyreels-v4 convert: error: {message}", file=sys.stderr)
        return 2
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
