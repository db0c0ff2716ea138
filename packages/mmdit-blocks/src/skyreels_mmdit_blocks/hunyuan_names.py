"""Parameter-name map between our branch and HunyuanVideo checkpoints (diffusers and official names).

Each ``NameRule`` says how one of our tensors is made from checkpoint tensors: the concatenation along
dim 0 of one or more sources (fused projections), or one source with its two halves swapped (final
layer modulation). The map is derived from facts about the public checkpoints (FACTS.md):

- diffusers splits every fused projection: ``to_q/to_k/to_v`` (+ ``proj_mlp`` in single blocks);
  the official checkpoint stores ``img_attn_qkv`` / ``txt_attn_qkv`` / ``self_attn_qkv`` fused and the
  single-block ``linear1`` as ``[q | k | v | mlp]`` (D and the MLP width follow from the shapes);
- ``img_mod`` / ``txt_mod`` are diffusers' ``norm1`` / ``norm1_context``;
- the final layer's modulation is ``(shift, scale)`` in the official checkpoint and ours, but
  ``(scale, shift)`` in diffusers' ``norm_out.linear``.

Parameter-free LayerNorms have no entries.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from skyreels_mmdit_blocks.branch_config import MMDiTBranchConfig
from skyreels_mmdit_blocks.feed_forward import mlp_hidden_dim

__all__ = ["CheckpointFormat", "NameRule", "Transform", "hunyuan_name_rules"]


class CheckpointFormat(enum.Enum):
    """Naming scheme of a HunyuanVideo transformer checkpoint."""

    DIFFUSERS = "diffusers"  # HunyuanVideoTransformer3DModel state dict
    OFFICIAL = "official"  # Tencent's HunyuanVideo repository (double_blocks / single_blocks / ...)


class Transform(enum.Enum):
    CONCAT = "concat"  # ours = cat(sources, dim=0)
    SWAP_HALVES = "swap_halves"  # ours = cat(second half, first half) of the single source


@dataclass(frozen=True)
class NameRule:
    """``ours`` (a full parameter name) from ``sources`` (full checkpoint names, in order)."""

    ours: str
    sources: tuple[str, ...]
    transform: Transform = Transform.CONCAT
    split: tuple[int, ...] | None = None  # dim-0 sizes of the sources when there are several


_LINEAR = ("weight", "bias")
_GAIN = ("weight",)


def _expand(
    rules: list[NameRule],
    ours: str,
    sources: tuple[str, ...],
    suffixes: tuple[str, ...] = _LINEAR,
    *,
    transform: Transform = Transform.CONCAT,
    split: tuple[int, ...] | None = None,
) -> None:
    for suffix in suffixes:
        rules.append(NameRule(f"{ours}.{suffix}", tuple(f"{s}.{suffix}" for s in sources), transform, split))


def hunyuan_name_rules(config: MMDiTBranchConfig, fmt: CheckpointFormat) -> list[NameRule]:
    """Every rule for a branch of this config (refiner text embedding required; no new layers)."""
    if not isinstance(fmt, CheckpointFormat):
        raise TypeError(f"fmt must be a CheckpointFormat; got {fmt!r}")
    dim, mlp = config.dim, mlp_hidden_dim(config.dim, config.mlp_ratio)
    qkv, qkv_mlp = (dim, dim, dim), (dim, dim, dim, mlp)
    official = fmt is CheckpointFormat.OFFICIAL
    r: list[NameRule] = []

    # Embeddings.
    _expand(r, "patch_embed.proj", ("img_in.proj",) if official else ("x_embedder.proj",))
    if official:
        _expand(r, "condition.timestep_mlp.fc1", ("time_in.mlp.0",))
        _expand(r, "condition.timestep_mlp.fc2", ("time_in.mlp.2",))
        if config.pooled_text_dim is not None:
            _expand(r, "condition.pooled_text_mlp.fc1", ("vector_in.in_layer",))
            _expand(r, "condition.pooled_text_mlp.fc2", ("vector_in.out_layer",))
        if config.guidance_embedding:
            _expand(r, "condition.guidance_mlp.fc1", ("guidance_in.mlp.0",))
            _expand(r, "condition.guidance_mlp.fc2", ("guidance_in.mlp.2",))
    else:
        for ours, theirs in (("timestep_mlp", "timestep_embedder"), ("pooled_text_mlp", "text_embedder")):
            if ours == "pooled_text_mlp" and config.pooled_text_dim is None:
                continue
            _expand(r, f"condition.{ours}.fc1", (f"time_text_embed.{theirs}.linear_1",))
            _expand(r, f"condition.{ours}.fc2", (f"time_text_embed.{theirs}.linear_2",))
        if config.guidance_embedding:
            _expand(r, "condition.guidance_mlp.fc1", ("time_text_embed.guidance_embedder.linear_1",))
            _expand(r, "condition.guidance_mlp.fc2", ("time_text_embed.guidance_embedder.linear_2",))

    # Text token refiner.
    t = "txt_in" if official else "context_embedder"
    _expand(r, "text_embed.proj_in", (f"{t}.input_embedder",) if official else (f"{t}.proj_in",))
    if official:
        _expand(r, "text_embed.timestep_mlp.fc1", (f"{t}.t_embedder.mlp.0",))
        _expand(r, "text_embed.timestep_mlp.fc2", (f"{t}.t_embedder.mlp.2",))
        _expand(r, "text_embed.pooled_mlp.fc1", (f"{t}.c_embedder.linear_1",))
        _expand(r, "text_embed.pooled_mlp.fc2", (f"{t}.c_embedder.linear_2",))
    else:
        _expand(r, "text_embed.timestep_mlp.fc1", (f"{t}.time_text_embed.timestep_embedder.linear_1",))
        _expand(r, "text_embed.timestep_mlp.fc2", (f"{t}.time_text_embed.timestep_embedder.linear_2",))
        _expand(r, "text_embed.pooled_mlp.fc1", (f"{t}.time_text_embed.text_embedder.linear_1",))
        _expand(r, "text_embed.pooled_mlp.fc2", (f"{t}.time_text_embed.text_embedder.linear_2",))
    for i in range(config.num_refiner_blocks):
        ours = f"text_embed.blocks.{i}"
        if official:
            b = f"{t}.individual_token_refiner.blocks.{i}"
            names = {
                "qkv": (f"{b}.self_attn_qkv",),
                "out": f"{b}.self_attn_proj",
                "fc1": f"{b}.mlp.fc1",
                "fc2": f"{b}.mlp.fc2",
                "gates": f"{b}.adaLN_modulation.1",
            }
        else:
            b = f"{t}.token_refiner.refiner_blocks.{i}"
            names = {
                "qkv": (f"{b}.attn.to_q", f"{b}.attn.to_k", f"{b}.attn.to_v"),
                "out": f"{b}.attn.to_out.0",
                "fc1": f"{b}.ff.net.0.proj",
                "fc2": f"{b}.ff.net.2",
                "gates": f"{b}.norm_out.linear",
            }
        _expand(r, f"{ours}.norm1", (f"{b}.norm1",))
        _expand(r, f"{ours}.qkv", names["qkv"], split=qkv if len(names["qkv"]) > 1 else None)
        _expand(r, f"{ours}.out", (names["out"],))
        _expand(r, f"{ours}.norm2", (f"{b}.norm2",))
        _expand(r, f"{ours}.mlp.fc1", (names["fc1"],))
        _expand(r, f"{ours}.mlp.fc2", (names["fc2"],))
        _expand(r, f"{ours}.gates.linear", (names["gates"],))

    # Dual-stream blocks.
    for i in range(config.num_dual_blocks):
        ours = f"dual_blocks.{i}"
        if official:
            b = f"double_blocks.{i}"
            for side, theirs in (("latent", "img"), ("text", "txt")):
                _expand(r, f"{ours}.{side}_modulation.linear", (f"{b}.{theirs}_mod.linear",))
                _expand(r, f"{ours}.{side}_attn.qkv", (f"{b}.{theirs}_attn_qkv",))
                _expand(r, f"{ours}.{side}_attn.q_norm", (f"{b}.{theirs}_attn_q_norm",), _GAIN)
                _expand(r, f"{ours}.{side}_attn.k_norm", (f"{b}.{theirs}_attn_k_norm",), _GAIN)
                _expand(r, f"{ours}.{side}_out", (f"{b}.{theirs}_attn_proj",))
                _expand(r, f"{ours}.{side}_mlp.fc1", (f"{b}.{theirs}_mlp.fc1",))
                _expand(r, f"{ours}.{side}_mlp.fc2", (f"{b}.{theirs}_mlp.fc2",))
        else:
            b = f"transformer_blocks.{i}"
            _expand(r, f"{ours}.latent_modulation.linear", (f"{b}.norm1.linear",))
            _expand(r, f"{ours}.text_modulation.linear", (f"{b}.norm1_context.linear",))
            _expand(r, f"{ours}.latent_attn.qkv", tuple(f"{b}.attn.to_{x}" for x in "qkv"), split=qkv)
            _expand(r, f"{ours}.text_attn.qkv", tuple(f"{b}.attn.add_{x}_proj" for x in "qkv"), split=qkv)
            _expand(r, f"{ours}.latent_attn.q_norm", (f"{b}.attn.norm_q",), _GAIN)
            _expand(r, f"{ours}.latent_attn.k_norm", (f"{b}.attn.norm_k",), _GAIN)
            _expand(r, f"{ours}.text_attn.q_norm", (f"{b}.attn.norm_added_q",), _GAIN)
            _expand(r, f"{ours}.text_attn.k_norm", (f"{b}.attn.norm_added_k",), _GAIN)
            _expand(r, f"{ours}.latent_out", (f"{b}.attn.to_out.0",))
            _expand(r, f"{ours}.text_out", (f"{b}.attn.to_add_out",))
            _expand(r, f"{ours}.latent_mlp.fc1", (f"{b}.ff.net.0.proj",))
            _expand(r, f"{ours}.latent_mlp.fc2", (f"{b}.ff.net.2",))
            _expand(r, f"{ours}.text_mlp.fc1", (f"{b}.ff_context.net.0.proj",))
            _expand(r, f"{ours}.text_mlp.fc2", (f"{b}.ff_context.net.2",))

    # Single-stream blocks.
    for i in range(config.num_single_blocks):
        ours = f"single_blocks.{i}"
        if official:
            b = f"single_blocks.{i}"
            _expand(r, f"{ours}.modulation.linear", (f"{b}.modulation.linear",))
            _expand(r, f"{ours}.qkv_mlp_in", (f"{b}.linear1",))
            _expand(r, f"{ours}.q_norm", (f"{b}.q_norm",), _GAIN)
            _expand(r, f"{ours}.k_norm", (f"{b}.k_norm",), _GAIN)
            _expand(r, f"{ours}.attn_mlp_out", (f"{b}.linear2",))
        else:
            b = f"single_transformer_blocks.{i}"
            _expand(r, f"{ours}.modulation.linear", (f"{b}.norm.linear",))
            sources = (*(f"{b}.attn.to_{x}" for x in "qkv"), f"{b}.proj_mlp")
            _expand(r, f"{ours}.qkv_mlp_in", sources, split=qkv_mlp)
            _expand(r, f"{ours}.q_norm", (f"{b}.attn.norm_q",), _GAIN)
            _expand(r, f"{ours}.k_norm", (f"{b}.attn.norm_k",), _GAIN)
            _expand(r, f"{ours}.attn_mlp_out", (f"{b}.proj_out",))

    # Output head: (shift, scale) in ours and official, (scale, shift) in diffusers.
    if official:
        _expand(r, "final_layer.modulation.linear", ("final_layer.adaLN_modulation.1",))
        _expand(r, "final_layer.proj", ("final_layer.linear",))
    else:
        _expand(r, "final_layer.modulation.linear", ("norm_out.linear",), transform=Transform.SWAP_HALVES)
        _expand(r, "final_layer.proj", ("proj_out",))
    return r
