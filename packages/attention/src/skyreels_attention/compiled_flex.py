"""Calling torch.compile'd flex attention without its silent O(L^2) fallback.

torch.compile keeps at most `torch._dynamo.config.recompile_limit` (8 in torch 2.13) compiled
variants per code object; every new shape, dtype or grad mode adds one. Past the limit it runs the
function *eagerly*, and eager flex attention materialises the full [B, H, Lq, Lk] score matrix:
103 GB at L = 32k with 24 heads, i.e. an out-of-memory error far from its cause (or, at small
sizes, a silently slow benchmark). Both flex backends therefore compile a wrapper of their own
(separate caches) and call it through `run_compiled`, which raises the limit and makes hitting it
an error.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["RECOMPILE_LIMIT", "run_compiled"]

RECOMPILE_LIMIT = 64


def run_compiled(fn: Callable[..., Tensor], *args: object, **kwargs: object) -> Tensor:
    """Call compiled `fn` with `RECOMPILE_LIMIT` variants allowed, raising when it is exceeded."""
    with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT, fail_on_recompile_limit_hit=True):
        return fn(*args, **kwargs)
