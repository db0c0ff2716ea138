"""The shared text encoder (paper 3.1): one frozen encoder whose embeddings condition both branches.

``TextEncoder`` is the interface; adapters: ``EmbeddedTextEncoder`` (self-contained default),
``HFTextEncoder`` (T5 / UMT5 / CLIP text models from transformers), ``QwenVLTextEncoder`` (Qwen2.5-VL,
text plus reference images and video clips). ``load_text_encoder`` opens a saved folder;
``PromptEmbeddingCache`` memoises embeddings. docs/text-encoders.md describes them.

The Hugging Face adapters import transformers only when used.
"""

from skyreels_v4.text.base import TextEncoder
from skyreels_v4.text.cache import PromptEmbeddingCache, reference_digest
from skyreels_v4.text.embedded import (
    EmbeddedTextEncoder,
    EmbeddedTextEncoderConfig,
    EmbeddedTokenizer,
    PositionEncoding,
    default_vocabulary,
)
from skyreels_v4.text.embeddings import TextEmbeddings
from skyreels_v4.text.layers import FinalNorm
from skyreels_v4.text.registry import ADAPTERS, load_text_encoder

__all__ = [
    "ADAPTERS",
    "EmbeddedTextEncoder",
    "EmbeddedTextEncoderConfig",
    "EmbeddedTokenizer",
    "FinalNorm",
    "HFTextEncoder",
    "HFTextEncoderConfig",
    "PositionEncoding",
    "PromptEmbeddingCache",
    "QwenVLTextEncoder",
    "QwenVLTextEncoderConfig",
    "TextEmbeddings",
    "TextEncoder",
    "default_vocabulary",
    "load_text_encoder",
    "reference_digest",
]

_LAZY = {
    "HFTextEncoder": "skyreels_v4.text.hf",
    "HFTextEncoderConfig": "skyreels_v4.text.hf",
    "QwenVLTextEncoder": "skyreels_v4.text.qwen_vl",
    "QwenVLTextEncoderConfig": "skyreels_v4.text.qwen_vl",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'skyreels_v4.text' has no attribute {name!r}")
