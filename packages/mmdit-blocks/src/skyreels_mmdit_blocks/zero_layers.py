"""Is a zero-initialised output projection still exactly zero? (ARCHITECTURE.md section 4: new layers
start at zero, so a converted text-to-video model adds nothing through them until trained.)

Inference paths use this to skip work that provably adds zero. The answer is True only for a plain
``nn.Linear`` whose weight and bias are plain tensors that are all zero: a wrapped layer (peft LoRA adds
``B A x`` to a zero base), a quantised weight (torchao tensor subclasses) or anything else unknown is
answered False, so the caller runs the layer.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["is_zero_linear"]

_PLAIN = (torch.Tensor, nn.Parameter)


def is_zero_linear(layer: nn.Module) -> bool:
    """True when ``layer`` is a plain ``nn.Linear`` with every weight and bias entry exactly zero (one host
    sync per tensor); False otherwise, including for wrapped or quantised layers."""
    if type(layer) is not nn.Linear or type(layer.weight) not in _PLAIN:
        return False
    bias = layer.bias
    if bias is not None and type(bias) not in _PLAIN:
        return False
    return not bool(layer.weight.any()) and (bias is None or not bool(bias.any()))
