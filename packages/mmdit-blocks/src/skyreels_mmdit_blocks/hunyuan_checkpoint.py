"""Reading HunyuanVideo checkpoints: safetensors from a directory, format detection, sizes from shapes.

Weights are read from safetensors only (never unpickled), with ``config.json`` beside them when there
is one. Every size comes from the tensor shapes (``infer_hunyuan_branch_config``); only the RoPE
split, which no weight carries, comes from ``config.json`` (or HunyuanVideo's default for head dim
128). A ``config.json`` that disagrees with the shapes is an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from skyreels_attention import AttentionConfig
from skyreels_av_rope import HUNYUAN_VIDEO_ROPE, RotaryConfig
from skyreels_mmdit_blocks.branch_config import MMDiTBranchConfig, Modality, TextEmbeddingKind
from skyreels_mmdit_blocks.hunyuan_names import CheckpointFormat

__all__ = [
    "ImportReport",
    "StateDict",
    "WeightImportError",
    "detect_checkpoint_format",
    "infer_hunyuan_branch_config",
    "read_safetensors_directory",
]

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class ImportReport:
    """What a HunyuanVideo import did.

    source_format: naming scheme detected in the checkpoint.
    loaded: our parameter names that were filled from the checkpoint.
    missing: checkpoint names the branch needed but did not find.
    unexpected: checkpoint names the branch did not use.
    kept_initialisation: our parameters the checkpoint has no counterpart for by design (new
        layers that start at zero); they were left as they were.
    widened: our parameters filled partly, the rest zero (patch embedding with more input channels).
    """

    source_format: CheckpointFormat
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    kept_initialisation: tuple[str, ...]
    widened: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when nothing was missing or unexpected."""
        return not self.missing and not self.unexpected


class WeightImportError(ValueError):
    """A checkpoint does not fit the branch; ``report`` holds the details when a load got that far."""

    def __init__(self, message: str, report: ImportReport | None = None) -> None:
        if report is not None:

            def shown(names: tuple[str, ...]) -> str:
                return ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")

            if report.missing:
                message += f"\n  missing from the checkpoint: {shown(report.missing)}"
            if report.unexpected:
                message += f"\n  unexpected in the checkpoint: {shown(report.unexpected)}"
        super().__init__(message)
        self.report = report


def read_safetensors_directory(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """All tensors of the ``*.safetensors`` files in ``directory`` (shards included) and its config.json.

    With a ``*.safetensors.index.json`` only the shards it names are read. A tensor name appearing in
    two files is an error.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise WeightImportError(
            f"directory must be an existing folder of .safetensors files; got {str(directory)!r}"
        )
    indexes = sorted(directory.glob("*.safetensors.index.json"))
    if len(indexes) > 1:
        raise WeightImportError(
            f"{directory} holds several safetensors index files: {[p.name for p in indexes]}"
        )
    if indexes:
        files = sorted(
            {directory / name for name in json.loads(indexes[0].read_text())["weight_map"].values()}
        )
    else:
        files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise WeightImportError(f"no .safetensors file in {directory}")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        for name, tensor in load_file(path).items():
            if name in state:
                raise WeightImportError(f"tensor {name!r} appears in more than one file of {directory}")
            state[name] = tensor
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else None
    return state, config


def detect_checkpoint_format(state_dict: StateDict) -> CheckpointFormat:
    """DIFFUSERS if the names are ``transformer_blocks.*``-style, OFFICIAL if ``double_blocks.*``-style."""
    names = set(state_dict)
    if "x_embedder.proj.weight" in names:
        return CheckpointFormat.DIFFUSERS
    if "img_in.proj.weight" in names:
        return CheckpointFormat.OFFICIAL
    sample = sorted(names)[:5]
    raise WeightImportError(
        "state_dict is not a HunyuanVideo transformer: expected 'x_embedder.proj.weight' (diffusers) or "
        f"'img_in.proj.weight' (official); first names found: {sample}"
    )


def _count(names: set[str], pattern: str) -> int:
    indices = {int(m.group(1)) for n in names if (m := re.match(pattern, n))}
    if indices != set(range(len(indices))):
        raise WeightImportError(
            f"block indices matching {pattern!r} are not contiguous from 0: {sorted(indices)}"
        )
    return len(indices)


def _shape(state_dict: StateDict, name: str) -> tuple[int, ...]:
    if name not in state_dict:
        raise WeightImportError(f"checkpoint lacks {name!r}, needed to read the model size")
    return tuple(state_dict[name].shape)


def infer_hunyuan_branch_config(
    state_dict: StateDict,
    *,
    config_json: Mapping | None = None,
    rope: RotaryConfig | None = None,
    attention: AttentionConfig | None = None,
) -> MMDiTBranchConfig:
    """A video ``MMDiTBranchConfig`` with every size read from the checkpoint's tensor shapes.

    RoPE: ``rope`` if given, else ``rope_axes_dim``/``rope_theta`` from ``config_json`` (diffusers),
    else HunyuanVideo's (16, 56, 56)/256 when the head dim is 128; otherwise an error.
    """
    fmt = detect_checkpoint_format(state_dict)
    names = set(state_dict)
    official = fmt is CheckpointFormat.OFFICIAL
    dim, in_channels, *patch = _shape(
        state_dict, "img_in.proj.weight" if official else "x_embedder.proj.weight"
    )
    if official:
        dual = _count(names, r"double_blocks\.(\d+)\.")
        single = _count(names, r"single_blocks\.(\d+)\.")
        refiner = _count(names, r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.")
        q_norm = "double_blocks.0.img_attn_q_norm.weight" if dual else "single_blocks.0.q_norm.weight"
        if dual:
            mlp_dim = _shape(state_dict, "double_blocks.0.img_mlp.fc1.weight")[0]
        else:  # linear1 = [q | k | v | mlp]: the MLP width is what is left after 3·D rows
            mlp_dim = _shape(state_dict, "single_blocks.0.linear1.weight")[0] - 3 * dim
        out_features = _shape(state_dict, "final_layer.linear.weight")[0]
        text_dim = _shape(state_dict, "txt_in.input_embedder.weight")[1]
        pooled = "vector_in.in_layer.weight"
        guidance = "guidance_in.mlp.0.weight" in names
    else:
        dual = _count(names, r"transformer_blocks\.(\d+)\.")
        single = _count(names, r"single_transformer_blocks\.(\d+)\.")
        refiner = _count(names, r"context_embedder\.token_refiner\.refiner_blocks\.(\d+)\.")
        q_norm = (
            "transformer_blocks.0.attn.norm_q.weight"
            if dual
            else "single_transformer_blocks.0.attn.norm_q.weight"
        )
        mlp_name = (
            "transformer_blocks.0.ff.net.0.proj.weight"
            if dual
            else "single_transformer_blocks.0.proj_mlp.weight"
        )
        mlp_dim = _shape(state_dict, mlp_name)[0]
        out_features = _shape(state_dict, "proj_out.weight")[0]
        text_dim = _shape(state_dict, "context_embedder.proj_in.weight")[1]
        pooled = "time_text_embed.text_embedder.linear_1.weight"
        guidance = "time_text_embed.guidance_embedder.linear_1.weight" in names
    head_dim = _shape(state_dict, q_norm)[0]
    patch_volume = patch[0] * patch[1] * patch[2]
    if out_features % patch_volume:
        raise WeightImportError(
            f"output features {out_features} are not a multiple of the patch volume {patch_volume}"
        )

    if rope is None:
        if config_json is not None and "rope_axes_dim" in config_json:
            rope = RotaryConfig(
                axes_dims=tuple(int(d) for d in config_json["rope_axes_dim"]),
                theta=float(config_json.get("rope_theta", 256.0)),
            )
        elif head_dim == HUNYUAN_VIDEO_ROPE.head_dim:
            rope = HUNYUAN_VIDEO_ROPE
        else:
            raise WeightImportError(
                f"head dim {head_dim} is not HunyuanVideo's 128 and no config.json gives rope_axes_dim; "
                "pass rope="
            )
    config = MMDiTBranchConfig(
        modality=Modality.VIDEO,
        in_channels=in_channels,
        out_channels=out_features // patch_volume,
        patch_size=tuple(patch),
        dim=dim,
        num_heads=dim // head_dim,
        num_dual_blocks=dual,
        num_single_blocks=single,
        text_dim=text_dim,
        pooled_text_dim=_shape(state_dict, pooled)[1] if pooled in names else None,
        rope=rope,
        mlp_ratio=mlp_dim / dim,
        guidance_embedding=guidance,
        text_embedding=TextEmbeddingKind.REFINER,
        num_refiner_blocks=refiner,
        attention=attention or AttentionConfig(),
    )
    _check_config_json(config, config_json)
    return config


def _check_config_json(config: MMDiTBranchConfig, config_json: Mapping | None) -> None:
    """A diffusers config.json that disagrees with the tensors is an error, not a silent preference."""
    if config_json is None:
        return
    expected = {
        "num_layers": config.num_dual_blocks,
        "num_single_layers": config.num_single_blocks,
        "num_refiner_layers": config.num_refiner_blocks,
        "num_attention_heads": config.num_heads,
        "attention_head_dim": config.head_dim,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "text_embed_dim": config.text_dim,
        "pooled_projection_dim": config.pooled_text_dim,
        "guidance_embeds": config.guidance_embedding,
        "mlp_ratio": config.mlp_ratio,
    }
    wrong = {k: (config_json[k], v) for k, v in expected.items() if k in config_json and config_json[k] != v}
    if wrong:
        detail = ", ".join(f"{k}: config.json {a!r} vs weights {b!r}" for k, (a, b) in wrong.items())
        raise WeightImportError(f"config.json disagrees with the tensor shapes: {detail}")
