"""``load_text_encoder``: open any saved text-encoder folder by the adapter named in its config.json.

Only our own adapters are allowed: the class field is looked up in a fixed table, never imported by
name, so a config.json cannot make us import arbitrary code.
"""

from __future__ import annotations

import importlib
import os

import torch

from skyreels_v4.errors import FileFormatError
from skyreels_v4.text.base import TextEncoder, read_encoder_config

__all__ = ["ADAPTERS", "load_text_encoder"]

#: config.json "class" -> (module, attribute) of the adapter.
ADAPTERS: dict[str, tuple[str, str]] = {
    "EmbeddedTextEncoder": ("skyreels_v4.text.embedded", "EmbeddedTextEncoder"),
    "HFTextEncoder": ("skyreels_v4.text.hf", "HFTextEncoder"),
    "QwenVLTextEncoder": ("skyreels_v4.text.qwen_vl", "QwenVLTextEncoder"),
}


def load_text_encoder(
    folder: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> TextEncoder:
    """Load the encoder saved in ``folder`` (frozen, in eval mode), cast to ``dtype`` on ``device``."""
    name, _, path = read_encoder_config(folder)
    if name not in ADAPTERS:
        raise FileFormatError(
            path, f"class {name!r} is not a known text-encoder adapter; expected one of {sorted(ADAPTERS)}"
        )
    module, attribute = ADAPTERS[name]
    adapter: type[TextEncoder] = getattr(importlib.import_module(module), attribute)
    return adapter.from_pretrained(folder, dtype=dtype, device=device)
