"""Load a HunyuanVideo transformer checkpoint (diffusers or official names) into a video branch.

Nothing is silently ignored: checkpoint tensors the branch does not use are ``unexpected``, tensors
the branch needs but the checkpoint lacks are ``missing``, and both make a strict load raise
``WeightImportError`` with the full ``ImportReport``. The only branch parameters allowed to be
absent are the layers a text-to-video model does not have -- the text cross-attentions (eq. 4) --
and the extra patch-embedding input channels of Concat(V, I, M) (eq. 7); both keep their zero
initialisation and are listed in the report.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from skyreels_attention import AttentionConfig
from skyreels_av_rope import RotaryConfig
from skyreels_mmdit_blocks.branch import MMDiTBranch
from skyreels_mmdit_blocks.branch_config import Modality, TextEmbeddingKind
from skyreels_mmdit_blocks.hunyuan_checkpoint import (
    ImportReport,
    StateDict,
    WeightImportError,
    detect_checkpoint_format,
    infer_hunyuan_branch_config,
    read_safetensors_directory,
)
from skyreels_mmdit_blocks.hunyuan_names import CheckpointFormat, NameRule, Transform, hunyuan_name_rules

__all__ = ["build_video_branch_from_hunyuan", "export_hunyuan_state_dict", "load_hunyuan_video_weights"]


def _new_layer(name: str) -> bool:
    """Parameters a text-to-video checkpoint cannot have: eq. 4's text cross-attention."""
    return ".text_cross_attention." in name


def load_hunyuan_video_weights(
    branch: MMDiTBranch, source: str | Path | StateDict, *, strict: bool = True
) -> ImportReport:
    """Copy a HunyuanVideo checkpoint (directory of safetensors, or a state dict) into ``branch``.

    The branch must have the checkpoint's sizes, except that it may read more input channels
    (eq. 7; the extra ones are zero). With ``strict`` (default) any missing or unexpected tensor
    raises ``WeightImportError``; otherwise the report lists them and the matching tensors load.
    """
    if not isinstance(branch, MMDiTBranch):
        raise TypeError(f"branch must be an MMDiTBranch; got {type(branch).__name__}")
    config = branch.config
    if config.modality is not Modality.VIDEO or config.text_embedding is not TextEmbeddingKind.REFINER:
        raise WeightImportError(
            "HunyuanVideo weights need a video branch with the token refiner text embedding; got "
            f"modality={config.modality.value}, text_embedding={config.text_embedding.value}"
        )
    state_dict = read_safetensors_directory(source)[0] if isinstance(source, (str, Path)) else source
    fmt = detect_checkpoint_format(state_dict)
    rules = hunyuan_name_rules(config, fmt)
    ours = dict(branch.state_dict())
    covered = {rule.ours for rule in rules}
    uncovered = sorted(n for n in ours if n not in covered and not _new_layer(n))
    if uncovered:
        raise WeightImportError(f"internal name map misses branch parameters: {uncovered[:8]}")

    used: set[str] = set()
    missing: list[str] = []
    loaded: list[str] = []
    widened: list[str] = []
    values: dict[str, torch.Tensor] = {}
    for rule in rules:
        used.update(s for s in rule.sources if s in state_dict)  # expected names, even if unusable
        absent = [s for s in rule.sources if s not in state_dict]
        if absent:
            missing.extend(absent)
            continue
        value = _combine(rule, [state_dict[s] for s in rule.sources])
        target = ours[rule.ours]
        if (
            rule.ours == "patch_embed.proj.weight"
            and value.ndim == target.ndim
            and value.shape[1] < target.shape[1]
        ):
            padded = value.new_zeros(target.shape)
            padded[:, : value.shape[1]] = value  # Concat(V, I, M): pretrained V channels first (eq. 7)
            value = padded
            widened.append(rule.ours)
        if value.shape != target.shape:
            raise WeightImportError(
                f"checkpoint tensor(s) {list(rule.sources)} give shape {tuple(value.shape)} for "
                f"{rule.ours!r}, but the branch has {tuple(target.shape)}"
            )
        values[rule.ours] = value
        loaded.append(rule.ours)

    report = ImportReport(
        source_format=fmt,
        loaded=tuple(loaded),
        missing=tuple(missing),
        unexpected=tuple(sorted(set(state_dict) - used)),
        kept_initialisation=tuple(sorted(n for n in ours if _new_layer(n))),
        widened=tuple(widened),
    )
    if strict and not report.ok:
        raise WeightImportError(f"HunyuanVideo {fmt.value} checkpoint does not match the branch", report)
    with torch.no_grad():
        params = dict(branch.named_parameters())
        for name, value in values.items():
            params[name].copy_(value)
    return report


def _combine(rule: NameRule, tensors: list[torch.Tensor]) -> torch.Tensor:
    if rule.transform is Transform.SWAP_HALVES:
        first, second = tensors[0].chunk(2, dim=0)
        return torch.cat([second, first], dim=0)
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)


def build_video_branch_from_hunyuan(
    directory: str | Path,
    *,
    in_channels: int | None = None,
    text_cross_attention_blocks: tuple[int, ...] = (),
    rope: RotaryConfig | None = None,
    attention: AttentionConfig | None = None,
    strict: bool = True,
) -> tuple[MMDiTBranch, ImportReport]:
    """A video branch sized from the checkpoint in ``directory`` and loaded from it.

    ``in_channels`` widens the patch embedding (e.g. 33 for Concat(V, I, M)); the text cross-attention
    blocks are added at zero. The result reproduces the checkpoint's outputs exactly.
    """
    state_dict, config_json = read_safetensors_directory(directory)
    config = infer_hunyuan_branch_config(state_dict, config_json=config_json, rope=rope, attention=attention)
    config = replace(
        config,
        in_channels=in_channels if in_channels is not None else config.in_channels,
        text_cross_attention_blocks=text_cross_attention_blocks,
    )
    branch = MMDiTBranch(config)
    return branch, load_hunyuan_video_weights(branch, state_dict, strict=strict)


def export_hunyuan_state_dict(branch: MMDiTBranch, fmt: CheckpointFormat) -> dict[str, torch.Tensor]:
    """The branch's HunyuanVideo-compatible weights under ``fmt``'s names (inverse of the import).

    New layers (text cross-attention) have no HunyuanVideo name and raise if present.
    """
    if any(_new_layer(n) for n in branch.state_dict()):
        raise WeightImportError(
            "branch has text cross-attention layers, which HunyuanVideo checkpoints cannot hold"
        )
    ours = branch.state_dict()
    out: dict[str, torch.Tensor] = {}
    for rule in hunyuan_name_rules(branch.config, fmt):
        value = ours[rule.ours].detach().clone()
        if rule.transform is Transform.SWAP_HALVES:
            first, second = value.chunk(2, dim=0)
            out[rule.sources[0]] = torch.cat([second, first], dim=0)
        elif len(rule.sources) == 1:
            out[rule.sources[0]] = value
        else:
            for name, part in zip(rule.sources, value.split(list(rule.split), dim=0)):
                out[name] = part.clone()
    return out
