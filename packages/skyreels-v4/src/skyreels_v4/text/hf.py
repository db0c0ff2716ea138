"""``HFTextEncoder``: a transformers text encoder (T5 / UMT5 / mT5 encoder, CLIP text model) as the
shared text encoder of paper 3.1, e.g. Wan's UMT5-XXL or HunyuanVideo's CLIP-L pooled vector.

The folder holds our ``config.json`` and the Hugging Face checkpoint in ``model/`` (config.json,
safetensors weights, tokenizer files), or points at an existing checkpoint folder with an absolute
``model_dir``. Weights load only from safetensors. Layer choice: ``skyreels_v4.text.layers``.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skyreels_v4.errors import FileFormatError, PromptError
from skyreels_v4.text.base import TextEncoder, config_from_dict, config_to_dict
from skyreels_v4.text.embeddings import TextEmbeddings
from skyreels_v4.text.layers import FinalNorm, LayerCapture, resolve_hidden_layer

__all__ = [
    "HFTextEncoder",
    "HFTextEncoderConfig",
    "PooledOutput",
    "load_hf",
    "load_hf_model",
    "resolve_model_dir",
]

MODEL_DIR = "model"


class PooledOutput(str, enum.Enum):
    """``NONE``: no pooled vector. ``POOLER``: ``pooler_output`` (CLIP: the final-normed EOS token)."""

    NONE = "none"
    POOLER = "pooler"


@dataclass(frozen=True, kw_only=True)
class _Arch:
    model_class: str
    layers: tuple[str, ...]  # candidate attribute paths of the layer ModuleList
    norm: tuple[str, ...]  # candidate attribute paths of the final norm
    has_pooler: bool


# model_type -> how to open it; an allow-list, never an import by a name read from a file.
_ARCHS: dict[str, _Arch] = {
    "t5": _Arch(
        model_class="T5EncoderModel",
        layers=("encoder.block",),
        norm=("encoder.final_layer_norm",),
        has_pooler=False,
    ),
    "umt5": _Arch(
        model_class="UMT5EncoderModel",
        layers=("encoder.block",),
        norm=("encoder.final_layer_norm",),
        has_pooler=False,
    ),
    "mt5": _Arch(
        model_class="MT5EncoderModel",
        layers=("encoder.block",),
        norm=("encoder.final_layer_norm",),
        has_pooler=False,
    ),
    "clip_text_model": _Arch(
        model_class="CLIPTextModel",
        layers=("encoder.layers", "text_model.encoder.layers"),
        norm=("final_layer_norm", "text_model.final_layer_norm"),
        has_pooler=True,
    ),
}


@dataclass(frozen=True, kw_only=True)
class HFTextEncoderConfig:
    """``hidden_layer``/``final_norm``: see ``skyreels_v4.text.layers`` (default: ``last_hidden_state``).

    ``max_length``: tokens kept per prompt, special tokens included (at most the model's positions).
    """

    hidden_layer: int = -1
    final_norm: FinalNorm = FinalNorm.APPLY
    max_length: int = 256
    pooled: PooledOutput = PooledOutput.NONE

    def __post_init__(self) -> None:
        if isinstance(self.hidden_layer, bool) or not isinstance(self.hidden_layer, int):
            raise TypeError(f"hidden_layer: expected an int, got {self.hidden_layer!r}")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise ValueError(f"max_length: expected a positive int, got {self.max_length!r}")
        if not isinstance(self.final_norm, FinalNorm):
            raise TypeError(f"final_norm: expected a FinalNorm, got {self.final_norm!r}")
        if not isinstance(self.pooled, PooledOutput):
            raise TypeError(f"pooled: expected a PooledOutput, got {self.pooled!r}")


def _attribute(module: nn.Module, candidates: tuple[str, ...], what: str) -> Any:
    for path in candidates:
        target: Any = module
        try:
            for part in path.split("."):
                target = getattr(target, part)
        except AttributeError:
            continue
        return target
    raise TypeError(f"{type(module).__name__}: cannot find its {what} (looked for {list(candidates)})")


def resolve_model_dir(folder: Path, config_data: dict[str, Any], config_path: Path) -> Path:
    """The Hugging Face checkpoint folder named by ``model_dir`` (relative to ``folder`` or absolute)."""
    name = config_data.pop("model_dir", MODEL_DIR)
    if not isinstance(name, str) or not name:
        raise FileFormatError(config_path, f'expected "model_dir" to be a folder path, got {name!r}')
    model_dir = Path(name) if os.path.isabs(name) else folder / name
    if not (model_dir / "config.json").is_file():
        raise FileFormatError(config_path, f"model_dir {str(model_dir)!r} holds no Hugging Face config.json")
    return model_dir


def load_hf(loader: Any, model_dir: Path, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(model_dir)`` offline; errors become ``FileFormatError`` naming the folder."""
    try:
        return loader.from_pretrained(str(model_dir), local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FileFormatError(model_dir, f"cannot load the {what}: {error}") from error


def load_hf_model(model_class: Any, model_dir: Path, *, dtype: torch.dtype | None) -> nn.Module:
    """Load safetensors weights only; a weight the checkpoint lacks is an error, never a random init."""
    kwargs: dict[str, Any] = {"use_safetensors": True, "output_loading_info": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model, info = load_hf(model_class, model_dir, model_class.__name__, **kwargs)
    missing = sorted(info.get("missing_keys", []))
    if missing:
        raise FileFormatError(
            model_dir,
            f"the checkpoint lacks {len(missing)} weights of {model_class.__name__}, e.g. {missing[:3]}",
        )
    return model.eval()


class HFTextEncoder(TextEncoder):
    """A transformers encoder + its tokenizer (text only). Build with ``from_hf`` or ``from_pretrained``."""

    config_class = HFTextEncoderConfig

    def __init__(self, model: nn.Module, tokenizer: Any, config: HFTextEncoderConfig | None = None) -> None:
        super().__init__()
        config = HFTextEncoderConfig() if config is None else config
        if not isinstance(config, HFTextEncoderConfig):
            raise TypeError(f"config: expected HFTextEncoderConfig, got {type(config).__name__}")
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in _ARCHS:
            raise ValueError(f"model: expected a model_type in {sorted(_ARCHS)}, got {model_type!r}")
        arch = _ARCHS[model_type]
        if type(model).__name__ != arch.model_class:
            raise TypeError(
                f"model: expected {arch.model_class} for model_type {model_type!r}, "
                f"got {type(model).__name__}"
            )
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self._arch = arch
        self._layers: nn.ModuleList = _attribute(model, arch.layers, "layer list")
        self._norm: nn.Module = _attribute(model, arch.norm, "final norm")
        self._k = resolve_hidden_layer(config.hidden_layer, len(self._layers))
        if config.pooled is PooledOutput.POOLER and not arch.has_pooler:
            raise ValueError(f"pooled: {model_type!r} models have no pooler output; use PooledOutput.NONE")
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions is not None and config.max_length > positions:
            raise ValueError(
                f"max_length: expected <= {positions} (the model's positions), got {config.max_length}"
            )
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer: expected a pad token, got none")
        self.model_dir: Path | None = None
        self.freeze()

    @classmethod
    def from_hf(
        cls,
        model_dir: str | os.PathLike[str],
        config: HFTextEncoderConfig | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> HFTextEncoder:
        """Open a Hugging Face checkpoint folder (safetensors + tokenizer), e.g. a downloaded UMT5-XXL."""
        import transformers

        model_dir = Path(model_dir)
        hf_config = load_hf(transformers.AutoConfig, model_dir, "model config")
        arch = _ARCHS.get(hf_config.model_type)
        if arch is None:
            raise FileFormatError(
                model_dir / "config.json",
                f"model_type {hf_config.model_type!r} is not one of {sorted(_ARCHS)}",
            )
        model = load_hf_model(getattr(transformers, arch.model_class), model_dir, dtype=dtype)
        tokenizer = load_hf(transformers.AutoTokenizer, model_dir, "tokenizer")
        encoder = cls(model.to(device), tokenizer, config)
        encoder.model_dir = model_dir
        return encoder

    # -- TextEncoder ----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "d_model", None) or cfg.hidden_size)

    @property
    def pooled_dim(self) -> int | None:
        return self.dim if self.config.pooled is PooledOutput.POOLER else None

    @property
    def max_length(self) -> int:
        return self.config.max_length

    def _encode(
        self,
        prompts: list[str],
        images: list[list[torch.Tensor]] | None,
        videos: list[list[torch.Tensor]] | None,
    ) -> TextEmbeddings:
        self.tokenizer.padding_side = "right"
        batch = self.tokenizer(
            prompts,
            padding="longest",
            truncation=True,
            max_length=self.config.max_length,
            return_tensors="pt",
        )
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device).bool()
        empty = torch.nonzero(mask.sum(1) == 0).flatten().tolist()
        if empty:
            raise PromptError(f"prompts[{empty[0]}]: expected at least one token, the tokenizer gave none")
        pooled_wanted = self.config.pooled is PooledOutput.POOLER
        capture = LayerCapture(self._layers, self._k, stop=not pooled_wanted)
        with capture.run():
            output = self.model(input_ids=ids, attention_mask=mask.long())
        hidden = capture.value
        assert hidden is not None
        if self.config.final_norm is FinalNorm.APPLY:
            hidden = self._norm(hidden)
        pooled = output.pooler_output if pooled_wanted else None
        return TextEmbeddings(tokens=hidden * mask[..., None].to(hidden.dtype), mask=mask, pooled=pooled)

    # -- files ----------------------------------------------------------------------------------

    def _config_dict(self) -> dict[str, Any]:
        return {**config_to_dict(self.config), "model_dir": MODEL_DIR}

    def _save_files(self, folder: Path) -> None:
        self.model.save_pretrained(str(folder / MODEL_DIR))
        self.tokenizer.save_pretrained(str(folder / MODEL_DIR))

    @classmethod
    def _load(
        cls,
        folder: Path,
        config_data: dict[str, Any],
        config_path: Path,
        *,
        dtype: torch.dtype | None,
        device: torch.device | str | None,
    ) -> HFTextEncoder:
        data = dict(config_data)
        model_dir = resolve_model_dir(folder, data, config_path)
        config = config_from_dict(HFTextEncoderConfig, data, path=config_path)
        return cls.from_hf(model_dir, config, dtype=dtype, device=device)
