"""LoRA fine-tuning of the joint transformer (after the paper's SFT, section 4.4) with peft.

Chosen ``nn.Linear`` layers (``LoRAConfig.target_modules``: regular expressions matched in full
against module names such as ``audio.dual_blocks.0.latent_attn.qkv``) get low-rank adapters
``W x + (alpha / rank) · B A x`` (B starts at zero, so the wrapped model starts equal to the base);
every other weight is frozen. Per-modality loss masks are ``JointTrainingModule``'s weights: an
audio-only fine-tune sets ``video_weight: 0``.

Exports (``LoRAExport``): ``adapter`` writes ``adapter_model.safetensors`` (peft's key names) and
``adapter_config.json`` (peft's ``LoraConfig`` plus the base model's transformer config);
``merged`` writes a plain model folder (``W + (alpha / rank) · B A`` folded in) that
``SkyReelsV4Transformer.from_pretrained`` loads.

peft is an optional dependency (``pip install skyreels-v4[tune]``).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from skyreels_v4.errors import ConfigMismatchError, FileFormatError, SkyReelsError
from skyreels_v4.io import atomic_write_json, read_json, read_safetensors, save_safetensors
from skyreels_v4.training.stages import StageTrainingModule

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "LoRAConfig",
    "LoRAExport",
    "LoRATrainingModule",
    "apply_lora",
    "load_lora_adapter",
    "lora_targets",
    "merge_lora",
    "save_lora_adapter",
]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoRAConfig:
    """Args:
    target_modules: regular expressions; every ``nn.Linear`` whose full name matches one is wrapped.
        Each pattern must match at least one linear layer.
    rank: the adapters' rank r.
    alpha: the scale numerator (the update is ``alpha / rank · B A``).
    dropout: dropout on the adapters' input during training.
    """

    target_modules: tuple[str, ...]
    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, str) or not self.target_modules:
            raise SkyReelsError(
                f"lora.target_modules: expected a non-empty list of regular expressions, "
                f"got {self.target_modules!r}"
            )
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        for pattern in self.target_modules:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as error:
                raise SkyReelsError(
                    f"lora.target_modules: {pattern!r} is not a regular expression ({error})"
                ) from None
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise SkyReelsError(f"lora.rank: expected a positive int, got {self.rank!r}")
        for name, value, low, high in (
            ("alpha", self.alpha, 0.0, math.inf),
            ("dropout", self.dropout, 0.0, 1.0),
        ):
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            if not ok or not (low < value if name == "alpha" else low <= value < high):
                raise SkyReelsError(
                    f"lora.{name}: expected a finite number in the allowed range, got {value!r}"
                )

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank

    @classmethod
    def parse(cls, value: LoRAConfig | Mapping[str, Any]) -> LoRAConfig:
        if isinstance(value, LoRAConfig):
            return value
        if not isinstance(value, Mapping):
            raise SkyReelsError(f"lora: expected a mapping of LoRAConfig fields, got {value!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise SkyReelsError(f"lora: unknown keys {unknown}; expected some of {sorted(known)}")
        if "target_modules" not in value:
            raise SkyReelsError("lora.target_modules: required (regular expressions of linear layer names)")
        data = dict(value)
        if isinstance(data["target_modules"], list):
            data["target_modules"] = tuple(data["target_modules"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "target_modules": list(self.target_modules)}


class LoRAExport(str, enum.Enum):
    """What a LoRA run writes when it ends: the adapter alone or the merged model folder."""

    ADAPTER = "adapter"
    MERGED = "merged"


def _peft() -> Any:
    try:
        import peft
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise SkyReelsError("LoRA fine-tuning needs peft: pip install 'skyreels-v4[tune]'") from error
    return peft


def lora_targets(model: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    """Names of the ``nn.Linear`` modules of ``model`` matched in full by one of ``patterns``."""
    linear = [name for name, module in model.named_modules() if type(module) is nn.Linear]
    found: list[str] = []
    for pattern in patterns:
        matched = [name for name in linear if re.fullmatch(pattern, name)]
        if not matched:
            example = linear[0] if linear else "none"
            raise SkyReelsError(
                f"lora.target_modules: {pattern!r} matches no linear layer of the model "
                f"(names look like {example!r})"
            )
        found += [name for name in matched if name not in found]
    return found


def apply_lora(model: nn.Module, config: LoRAConfig) -> nn.Module:
    """Wrap the targeted linear layers of ``model`` in place with peft LoRA adapters; freeze the rest."""
    peft = _peft()
    targets = lora_targets(model, config.target_modules)
    peft_config = peft.LoraConfig(
        r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets
    )
    peft.inject_adapter_in_model(peft_config, model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name)
    return model


def _lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (``W + scale · B A``) and put the plain linear layers
    back, in place: the result has the base model's module tree and state-dict keys."""
    layers = _lora_layers(model)
    if not layers:
        raise SkyReelsError("model: holds no LoRA adapters to merge")
    for name, module in layers:
        try:
            module.merge(safe_merge=True)
        except ValueError as error:
            raise SkyReelsError(f"merge: adapter of {name} gives NaN/inf weights ({error})") from error
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def save_lora_adapter(model: nn.Module, folder: str | os.PathLike[str], config: LoRAConfig) -> Path:
    """``adapter_model.safetensors`` + ``adapter_config.json`` (written last) into ``folder``."""
    peft = _peft()
    from skyreels_v4.model.config_io import to_plain

    target = Path(folder)
    state = {k: v.detach().contiguous() for k, v in peft.get_peft_model_state_dict(model).items()}
    if not state:
        raise SkyReelsError("model: holds no LoRA adapters to save")
    save_safetensors(target / ADAPTER_WEIGHTS, state)
    targets = sorted(name for name, _ in _lora_layers(model))
    peft_config = peft.LoraConfig(
        r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets
    ).to_dict()
    base = getattr(model, "config", None)
    atomic_write_json(
        target / ADAPTER_CONFIG,
        {
            **{k: (sorted(v) if isinstance(v, set) else v) for k, v in peft_config.items() if _jsonable(v)},
            "skyreels_v4": {
                "lora": config.to_dict(),
                "base_transformer": None if base is None else to_plain(base),
            },
        },
    )
    return target


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict, set, tuple))


def load_lora_adapter(model: nn.Module, folder: str | os.PathLike[str]) -> nn.Module:
    """Wrap ``model`` (the base) with the adapter saved in ``folder`` and load its weights."""
    peft = _peft()
    from skyreels_v4.model.config_io import to_plain

    root = Path(folder)
    data = read_json(root / ADAPTER_CONFIG, what="LoRA adapter config")
    ours = data.get("skyreels_v4") if isinstance(data, dict) else None
    if not isinstance(ours, dict) or "lora" not in ours:
        raise FileFormatError(root / ADAPTER_CONFIG, "expected a skyreels-v4 LoRA adapter config")
    base = getattr(model, "config", None)
    if (
        ours.get("base_transformer") is not None
        and base is not None
        and ours["base_transformer"] != to_plain(base)
    ):
        raise ConfigMismatchError(
            f"folder: the adapter in {root} was trained on a different transformer config than this model"
        )
    config = LoRAConfig.parse(ours["lora"])
    apply_lora(model, config)
    state = read_safetensors(root / ADAPTER_WEIGHTS, check_finite=True)
    result = peft.set_peft_model_state_dict(model, state)
    unexpected = list(getattr(result, "unexpected_keys", []))
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if unexpected or missing:
        raise FileFormatError(
            root / ADAPTER_WEIGHTS,
            f"adapter weights do not fit the model (unexpected {unexpected[:3]}, missing {missing[:3]})",
        )
    return model


class LoRATrainingModule(StageTrainingModule):
    """``StageTrainingModule`` that fine-tunes LoRA adapters of the ``init_from`` model (module docstring).

    Args:
        lora: ``LoRAConfig`` fields (``target_modules``, ``rank``, ``alpha``, ``dropout``).
        export: ``adapter`` or ``merged``: what ``export_model`` (the ``ExportModel`` callback) writes.
        **kwargs: ``StageTrainingModule``'s arguments; ``init_from`` is required.
    """

    def __init__(self, *, lora: dict[str, Any], export: str = "adapter", **kwargs: Any) -> None:
        if kwargs.get("init_from") is None:
            raise SkyReelsError("init_from: LoRA fine-tuning starts from a model folder; got none")
        config = LoRAConfig.parse(lora)
        try:
            export_kind = LoRAExport(export)
        except ValueError:
            raise SkyReelsError(
                f"export: expected one of {[e.value for e in LoRAExport]}, got {export!r}"
            ) from None
        super().__init__(**kwargs)
        self.lora_config, self.export_kind = config, export_kind
        apply_lora(self.transformer, self.lora_config)
        if self.ema is not None:  # the EMA follows the wrapped model's parameters
            self.ema = [p.detach().clone() for p in self.transformer.parameters()]
        self.save_hyperparameters()

    def configure_optimizers(self) -> Any:
        return self._optimizer_and_schedule([p for p in self.transformer.parameters() if p.requires_grad])

    def _plain_transformer(self) -> nn.Module:
        return apply_lora(super()._plain_transformer(), self.lora_config)

    def export_model(self, folder: str | os.PathLike[str]) -> Path | None:
        """Write the adapter or the merged model folder (``export``), from the EMA weights if kept.
        Sharded weights: collective (every rank calls it), rank 0 writes; the others return None."""
        wrapped = self.export_transformer()
        if wrapped is None:
            return None
        if self.export_kind is LoRAExport.MERGED:
            return merge_lora(wrapped).save_pretrained(folder)
        return save_lora_adapter(wrapped, folder, self.lora_config)
