"""Import Stable Audio Open's "Oobleck" VAE weights (stable-audio-tools or diffusers naming).

Oobleck (stable-audio-tools ``autoencoders.py``: ``OobleckEncoder`` / ``OobleckDecoder`` with
``use_snake=True``, the ``"vae"`` bottleneck) has exactly our architecture: Stable Audio Open 1.0
is the ``stable_audio_open`` preset (stereo, channels 128, multipliers 1,2,4,8,16, strides
2,4,4,8,8 = 2048x, encoder output 128 = mean + scale of 64 latent channels, softplus scale, no
final tanh). Only the parameter names differ:

ours -> stable-audio-tools -> diffusers ``AutoencoderOobleck`` (``n`` = number of blocks,
residual-unit parts ``snake1, conv1, snake2, conv2`` are ``layers.0..3`` in stable-audio-tools):

- ``encoder.conv_in`` -> ``encoder.layers.0`` -> ``encoder.conv1``
- ``encoder.blocks.i.residual_units.j.<part>`` -> ``encoder.layers.(1+i).layers.j.layers.<0..3>``
  -> ``encoder.block.i.res_unit(j+1).<part>``
- ``encoder.blocks.i.snake`` / ``.downsample`` -> ``encoder.layers.(1+i).layers.3`` / ``.4``
  -> ``encoder.block.i.snake1`` / ``.conv1``
- ``encoder.snake_out`` / ``.conv_out`` -> ``encoder.layers.(n+1)`` / ``.(n+2)``
  -> ``encoder.snake1`` / ``.conv2``
- ``decoder.conv_in`` -> ``decoder.layers.0`` -> ``decoder.conv1``
- ``decoder.blocks.i.snake`` / ``.upsample`` -> ``decoder.layers.(1+i).layers.0`` / ``.1``
  -> ``decoder.block.i.snake1`` / ``.conv_t1``
- ``decoder.blocks.i.residual_units.j.<part>`` -> ``decoder.layers.(1+i).layers.(2+j).layers.<0..3>``
  -> ``decoder.block.i.res_unit(j+1).<part>``
- ``decoder.snake_out`` / ``.conv_out`` -> ``decoder.layers.(n+1)`` / ``.(n+2)``
  -> ``decoder.snake1`` / ``.conv2``

Weight-norm tensors: ours are torch's parametrizations
``parametrizations.weight.original0`` (g) / ``original1`` (v); the public checkpoints use the old
``weight_g`` / ``weight_v`` names (new-style names and folded plain ``weight`` are accepted too; a
plain weight ``w`` becomes ``g = ||w||`` over all dims but 0, ``v = w``). Snake ``alpha``/``beta``
are log-scale in both; diffusers stores them as ``[1, C, 1]``, we as ``[C]``. Every source key is
either loaded or reported as unexpected, and every parameter of ours either loaded or reported
as missing; ``strict=True`` raises if any list is non-empty.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from skyreels_audio_vae.model import AudioVAE, AudioVAEConfig

__all__ = [
    "OobleckNaming",
    "WeightImportReport",
    "infer_oobleck_config",
    "load_oobleck_weights",
    "oobleck_module_names",
]

OobleckNaming = Literal["stable_audio_tools", "diffusers"]

# Buffers of ours that Oobleck checkpoints do not have (latent normalisation starts at 0 / 1).
_OWN_BUFFERS = ("latent_mean", "latent_std")
_G, _V = "parametrizations.weight.original0", "parametrizations.weight.original1"


@dataclass(frozen=True)
class WeightImportReport:
    """What happened to every key. ``missing``: our parameters nobody provided; ``unexpected``:
    source keys with no place in our model; ``shape_mismatches``: ``"key: source vs ours"``;
    ``outside_prefix``: number of source keys skipped because they do not start with ``prefix``."""

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    shape_mismatches: tuple[str, ...]
    outside_prefix: int

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches)


def _unit_names(ours: str, theirs: str, naming: OobleckNaming) -> dict[str, str]:
    if naming == "stable_audio_tools":
        parts = {"snake1": "layers.0", "conv1": "layers.1", "snake2": "layers.2", "conv2": "layers.3"}
    else:
        parts = {p: p for p in ("snake1", "conv1", "snake2", "conv2")}
    return {f"{ours}.{p}": f"{theirs}.{q}" for p, q in parts.items()}


def oobleck_module_names(config: AudioVAEConfig, naming: OobleckNaming) -> dict[str, str]:
    """``{our module path: source module path}`` for every module with parameters."""
    if naming not in ("stable_audio_tools", "diffusers"):
        raise ValueError(f"naming: expected 'stable_audio_tools' or 'diffusers', got {naming!r}")
    n_blocks, n_units = len(config.strides), len(config.dilations)
    sat = naming == "stable_audio_tools"
    names: dict[str, str] = {}
    for side in ("encoder", "decoder"):
        names[f"{side}.conv_in"] = f"{side}.layers.0" if sat else f"{side}.conv1"
        names[f"{side}.snake_out"] = f"{side}.layers.{n_blocks + 1}" if sat else f"{side}.snake1"
        names[f"{side}.conv_out"] = f"{side}.layers.{n_blocks + 2}" if sat else f"{side}.conv2"
        for i in range(n_blocks):
            block = f"{side}.layers.{i + 1}.layers" if sat else f"{side}.block.{i}"
            if side == "encoder":
                names[f"encoder.blocks.{i}.snake"] = f"{block}.{n_units}" if sat else f"{block}.snake1"
                names[f"encoder.blocks.{i}.downsample"] = (
                    f"{block}.{n_units + 1}" if sat else f"{block}.conv1"
                )
                unit_offset = 0
            else:
                names[f"decoder.blocks.{i}.snake"] = f"{block}.0" if sat else f"{block}.snake1"
                names[f"decoder.blocks.{i}.upsample"] = f"{block}.1" if sat else f"{block}.conv_t1"
                unit_offset = 2
            for j in range(n_units):
                theirs = f"{block}.{unit_offset + j}" if sat else f"{block}.res_unit{j + 1}"
                names.update(_unit_names(f"{side}.blocks.{i}.residual_units.{j}", theirs, naming))
    return names


def _split_source_key(key: str) -> tuple[str, str]:
    """``(module path, parameter kind)`` with kinds g, v, weight, bias, alpha, beta."""
    for suffix, kind in ((".weight_g", "g"), (".weight_v", "v"), (f".{_G}", "g"), (f".{_V}", "v")):
        if key.endswith(suffix):
            return key[: -len(suffix)], kind
    module, _, leaf = key.rpartition(".")
    return module, leaf


def _weight_norm_g(weight: Tensor) -> Tensor:
    return torch.linalg.vector_norm(weight.flatten(1), dim=1).reshape(-1, *([1] * (weight.ndim - 1)))


def load_oobleck_weights(
    model: AudioVAE,
    state_dict: Mapping[str, Tensor],
    *,
    naming: OobleckNaming = "stable_audio_tools",
    prefix: str = "",
    strict: bool = True,
) -> WeightImportReport:
    """Copy an Oobleck state dict into ``model`` (in place) and report every key's fate.

    ``prefix`` selects the VAE inside a larger checkpoint (Stable Audio Open's ``model.ckpt``:
    ``"pretransform.model."``); keys outside it are counted, not loaded.
    """
    if not isinstance(model, AudioVAE):
        raise TypeError(f"model: expected AudioVAE, got {type(model).__name__}")
    module_names = oobleck_module_names(model.config, naming)
    by_source = {theirs: ours for ours, theirs in module_names.items()}
    own = {k: v for k, v in model.state_dict().items() if k not in _OWN_BUFFERS}
    updates: dict[str, Tensor] = {}
    unexpected, mismatches = [], []
    outside = 0
    for key, tensor in state_dict.items():
        if not key.startswith(prefix):
            outside += 1
            continue
        module, kind = _split_source_key(key[len(prefix) :])
        ours_module = by_source.get(module)
        if ours_module is None:
            unexpected.append(key)
            continue
        tensor = tensor.detach()
        if kind in ("alpha", "beta"):
            targets = {f"{ours_module}.{kind}": tensor.reshape(-1)}
        elif kind == "g":
            targets = {f"{ours_module}.{_G}": tensor}
        elif kind == "v":
            targets = {f"{ours_module}.{_V}": tensor}
        elif kind == "weight":
            targets = {f"{ours_module}.{_G}": _weight_norm_g(tensor), f"{ours_module}.{_V}": tensor}
        elif kind == "bias":
            targets = {f"{ours_module}.bias": tensor}
        else:
            targets = {}
        if not targets or any(t not in own for t in targets):
            unexpected.append(key)
            continue
        for target, value in targets.items():
            if tuple(value.shape) != tuple(own[target].shape):
                mismatches.append(f"{key}: {tuple(value.shape)} vs ours {target} {tuple(own[target].shape)}")
            else:
                updates[target] = value
    missing = sorted(set(own) - set(updates))
    report = WeightImportReport(
        loaded=tuple(sorted(updates)),
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        shape_mismatches=tuple(mismatches),
        outside_prefix=outside,
    )
    if strict and not report.ok:
        raise ValueError(
            "state_dict: does not match the Oobleck layout of this config: "
            f"missing={list(report.missing)[:8]} ({len(report.missing)}), "
            f"unexpected={list(report.unexpected)[:8]} ({len(report.unexpected)}), "
            f"shape_mismatches={list(report.shape_mismatches)[:8]} ({len(report.shape_mismatches)})"
        )
    with torch.no_grad():
        for target, value in updates.items():
            own[target].copy_(value.to(own[target].dtype))
    return report


def infer_oobleck_config(
    state_dict: Mapping[str, Tensor],
    *,
    naming: OobleckNaming = "stable_audio_tools",
    prefix: str = "",
    sample_rate: int = 44100,
    final_tanh: bool = False,
) -> AudioVAEConfig:
    """Read an :class:`AudioVAEConfig` off an Oobleck state dict's shapes (dilations assumed 1, 3, 9).

    The checkpoint cannot say whether the decoder ended in tanh (Stable Audio Open: no) or its
    sample rate; pass them if they differ from the defaults.
    """
    sat = naming == "stable_audio_tools"
    if naming not in ("stable_audio_tools", "diffusers"):
        raise ValueError(f"naming: expected 'stable_audio_tools' or 'diffusers', got {naming!r}")

    def v_weight(module: str) -> Tensor:
        for suffix in (".weight_v", f".{_V}", ".weight"):
            if prefix + module + suffix in state_dict:
                return state_dict[prefix + module + suffix]
        raise ValueError(f"state_dict: expected a weight for {prefix + module!r} (naming={naming!r})")

    conv_in = v_weight("encoder.layers.0" if sat else "encoder.conv1")  # [base, audio_channels, 7]
    pattern = re.compile(
        re.escape(prefix)
        + (r"encoder\.layers\.(\d+)\.layers\.\d+\.layers" if sat else r"encoder\.block\.(\d+)\.")
    )
    block_ids = sorted({int(m.group(1)) for k in state_dict if (m := pattern.match(k))})
    if not block_ids:
        raise ValueError(f"state_dict: found no encoder blocks under prefix {prefix!r} (naming={naming!r})")
    strides, widths = [], []
    for i in block_ids:
        name = f"encoder.layers.{i}.layers.4" if sat else f"encoder.block.{i}.conv1"
        down = v_weight(name)  # [out, in, 2 * stride]
        strides.append(down.shape[-1] // 2)
        widths.append(down.shape[0])
    base = conv_in.shape[0]
    n = len(block_ids)
    decoder_in = v_weight("decoder.layers.0" if sat else "decoder.conv1")  # [top, latent, 7]
    decoder_base = v_weight(f"decoder.layers.{n + 2}" if sat else "decoder.conv2").shape[1]
    encoder_out = v_weight(f"encoder.layers.{n + 2}" if sat else "encoder.conv2").shape[0]
    latent = decoder_in.shape[1]
    if encoder_out != 2 * latent:
        raise ValueError(
            "state_dict: expected encoder output channels = 2 x decoder input "
            f"({2 * latent}), got {encoder_out}"
        )
    return AudioVAEConfig(
        sample_rate=sample_rate,
        audio_channels=conv_in.shape[1],
        encoder_channels=base,
        decoder_channels=decoder_base,
        channel_multipliers=tuple(w // base for w in widths),
        strides=tuple(strides),
        dilations=(1, 3, 9),
        latent_channels=latent,
        scale_parameterization="softplus",
        final_tanh=final_tanh,
    )
