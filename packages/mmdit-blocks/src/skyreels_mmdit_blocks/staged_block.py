"""``StagedBlock``: the two-stage calling convention of the MMDiT blocks, and their regional compile.

A block runs as ``attention_stage`` (self-attention with text, then eq. 4) and ``feed_forward_stage``
(the MLPs); the joint transformer calls the two apart and puts the audio-video exchange (eq. 5)
between them, while ``forward`` runs them in order. ``nn.Module.compile`` would compile ``forward``
only, which the joint model never calls for a block in an exchange pair, so here ``compile()``
compiles both stages instead: a compiled block runs compiled code on every call path.

The compiled stages are made per instance on first use and remade for a copy (``copy.deepcopy`` of a
compiled block runs the copy's weights, not the original's). Inside an enclosing ``torch.compile``
trace the plain stages run, so that the whole-model compile traces through them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from skyreels_mmdit_blocks.block_context import BlockContext, BlockState

__all__ = ["StagedBlock"]


class StagedBlock(nn.Module):
    """Base of ``DualStreamBlock`` and ``SingleStreamBlock``: subclasses implement
    ``_attention_stage`` and ``_feed_forward_stage``."""

    def _attention_stage(
        self, latent_BLD: torch.Tensor, text_BTD: torch.Tensor, ctx: BlockContext
    ) -> BlockState:
        raise NotImplementedError

    def _feed_forward_stage(self, state: BlockState) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Compile both stages with ``torch.compile(*args, **kwargs)`` (lazily, on their next call)."""
        self.__dict__["_stage_compile_options"] = (args, dict(kwargs))
        self.__dict__.pop("_stage_cache", None)

    def uncompile(self) -> None:
        """Back to the eager stages (undoes ``compile``)."""
        self.__dict__.pop("_stage_compile_options", None)
        self.__dict__.pop("_stage_cache", None)

    @property
    def is_compiled(self) -> bool:
        """Whether ``compile()`` was called on this block."""
        return "_stage_compile_options" in self.__dict__

    def _compiled_stages(self) -> tuple[Any, Any] | None:
        options = self.__dict__.get("_stage_compile_options")
        if options is None or torch.compiler.is_compiling():
            return None
        cached = self.__dict__.get("_stage_cache")
        # Keyed by id: a deep copy carries the cache over, but its id differs (and the original stays
        # alive while the cache holds its bound methods, so its id cannot be reused).
        if cached is None or cached[0] != id(self):
            args, kwargs = options
            cached = (
                id(self),
                torch.compile(self._attention_stage, *args, **kwargs),
                torch.compile(self._feed_forward_stage, *args, **kwargs),
            )
            self.__dict__["_stage_cache"] = cached
        return cached[1], cached[2]

    def attention_stage(
        self, latent_BLD: torch.Tensor, text_BTD: torch.Tensor, ctx: BlockContext
    ) -> BlockState:
        """Self-attention with the text (eqs. 1-3) and, if present, text cross-attention (eq. 4)."""
        compiled = self._compiled_stages()
        stage = self._attention_stage if compiled is None else compiled[0]
        return stage(latent_BLD, text_BTD, ctx)

    def feed_forward_stage(self, state: BlockState) -> tuple[torch.Tensor, torch.Tensor]:
        """The MLPs, with the modulation the attention stage computed."""
        compiled = self._compiled_stages()
        stage = self._feed_forward_stage if compiled is None else compiled[1]
        return stage(state)

    def forward(
        self, latent_BLD: torch.Tensor, text_BTD: torch.Tensor, ctx: BlockContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """latent [B, L, D], text [B, Lt, D] -> (latent, text), same shapes."""
        return self.feed_forward_stage(self.attention_stage(latent_BLD, text_BTD, ctx))
