"""Which hidden layer a Hugging Face encoder hands out (paper 3.1 uses a frozen LLM's hidden states).

transformers' ``output_hidden_states`` tuple has ``L + 1`` entries, but its meaning differs by model:
for Qwen2.5-VL and T5 the last entry is *after* the final norm (it equals ``last_hidden_state``), for
CLIP it is before. We therefore never index that tuple. ``hidden_layer = k`` means the raw output of
layer ``k`` (``0`` = the input of layer 1, i.e. the token embeddings with any image features
scattered in; negative counts from the end, ``-1`` = the last layer), captured with a hook on the
layer module; ``FinalNorm.APPLY`` then passes it through the model's own final norm, so
``(-1, APPLY)`` is exactly ``last_hidden_state``. The hook can stop the forward right after the
chosen layer, so an early layer costs only the layers up to it.
"""

from __future__ import annotations

import contextlib
import enum
import operator
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["FinalNorm", "LayerCapture", "resolve_hidden_layer"]


class FinalNorm(str, enum.Enum):
    """Whether the chosen layer's output goes through the model's final norm."""

    APPLY = "apply"
    NONE = "none"


def resolve_hidden_layer(hidden_layer: int, num_layers: int) -> int:
    """``hidden_layer`` (``-num_layers-1 .. num_layers``) as ``k`` in ``0 .. num_layers``."""
    if isinstance(hidden_layer, bool):
        raise TypeError("hidden_layer: expected an int, got bool")
    hidden_layer = operator.index(hidden_layer)
    if not -num_layers - 1 <= hidden_layer <= num_layers:
        raise ValueError(
            f"hidden_layer: expected {-num_layers - 1}..{num_layers} (the model has {num_layers} layers), "
            f"got {hidden_layer}"
        )
    return hidden_layer if hidden_layer >= 0 else num_layers + 1 + hidden_layer


class _Stop(Exception):
    """Raised by the hook to end the forward once the chosen layer has run."""


class LayerCapture:
    """Capture the hidden states ``[B, L, D]`` after layer ``k`` of ``layers`` (``k = 0``: its input).

    Use as ``with capture.run() : model(...)``; afterwards ``capture.value`` holds the tensor. With
    ``stop=True`` the forward is cut short after layer ``k`` (its outputs are then not available).
    """

    def __init__(self, layers: nn.ModuleList, k: int, *, stop: bool) -> None:
        if not 0 <= k <= len(layers):
            raise ValueError(f"k: expected 0..{len(layers)}, got {k}")
        self.layers, self.k, self.stop = layers, k, stop
        self.value: torch.Tensor | None = None

    def _store(self, value: Any) -> None:
        tensor = value[0] if isinstance(value, (tuple, list)) else value
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
            raise RuntimeError(
                f"layer {self.k}: expected hidden states [B, L, D], got {type(tensor).__name__}"
            )
        self.value = tensor
        if self.stop:
            raise _Stop

    @contextlib.contextmanager
    def run(self) -> Iterator[LayerCapture]:
        self.value = None
        if self.k == 0:

            def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
                self._store(args[0] if args else kwargs["hidden_states"])

            handle = self.layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True)
        else:

            def hook(module: nn.Module, args: tuple, output: Any) -> None:
                self._store(output)

            handle = self.layers[self.k - 1].register_forward_hook(hook)
        try:
            yield self
        except _Stop:
            pass
        finally:
            handle.remove()
        if self.value is None:
            raise RuntimeError(f"layer {self.k}: the forward pass never reached it")
