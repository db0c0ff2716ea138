"""Low-memory inference modes (the efficient-inference concerns of paper 4.5, on one device).

- ``OffloadMode.MODEL``: component offload. Every component (text encoder, video and audio
  autoencoders, transformer) lives on the CPU and is moved to the compute device only while it runs,
  so the device holds one component at a time.
- ``OffloadMode.BLOCK``: block-level offload of the transformer. Its blocks (video, audio and the
  audio-video exchanges of eq. 5) keep their weights in CPU memory; forward pre-hooks on every
  sub-module of a block copy the block's weights to the compute device just before its first use,
  and at most ``max_resident`` blocks are on the device at once (least recently used leaves; the
  CPU copy is kept, so leaving costs nothing). The rest of the transformer (embeddings, final layers)
  stays on the device. Two resident blocks fit the joint model's lockstep: video block i and audio
  block j alternate inside one exchange.
- ``quantize_int8_weights``: torchao's int8 weight-only quantisation of the transformer's linear
  layers (``quantize_(model, Int8WeightOnlyConfig())``): weights take a quarter of fp32 memory.

Peak memory of each mode: benchmarks/pipeline_memory.py.
"""

from __future__ import annotations

import contextlib
import enum
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from skyreels_v4.errors import SkyReelsError

__all__ = ["BlockOffload", "OffloadMode", "offloadable_blocks", "quantize_int8_weights"]


class OffloadMode(str, enum.Enum):
    """Where the pipeline's weights wait while they are not computing (module docstring)."""

    NONE = "none"
    MODEL = "model"
    BLOCK = "block"


def offloadable_blocks(transformer: nn.Module) -> list[nn.Module]:
    """The transformer's big repeated modules: video blocks, audio blocks, audio-video exchanges."""
    blocks: list[nn.Module] = []
    for name in ("video", "audio"):
        branch = getattr(transformer, name, None)
        if branch is None or not hasattr(branch, "blocks"):
            raise SkyReelsError(f"transformer: expected a joint transformer with a {name!r} branch")
        blocks += list(branch.blocks)
    blocks += list(getattr(transformer, "exchanges", []))
    return blocks


class BlockOffload:
    """Forward pre-hooks that keep at most ``max_resident`` of ``blocks`` on ``device`` (module docstring).

    Attributes:
        loads: how many times a block was copied to the device (per forward: once per block when the
            LRU holds the blocks that alternate).
        peak_resident: the most blocks on the device at once.
    """

    def __init__(self, blocks: Sequence[nn.Module], *, device: torch.device | str, max_resident: int = 2):
        if isinstance(max_resident, bool) or not isinstance(max_resident, int) or max_resident < 1:
            raise SkyReelsError(f"max_resident: expected an int >= 1, got {max_resident!r}")
        self.device = torch.device(device)
        self.max_resident = max_resident
        self.blocks = list(blocks)
        self.loads = 0
        self.peak_resident = 0
        self._resident: OrderedDict[int, None] = OrderedDict()
        self._host: list[dict[str, torch.Tensor]] = []
        self._handles = []
        for index, block in enumerate(self.blocks):
            tensors = dict(block.named_parameters()) | dict(block.named_buffers())
            host = {name: tensor.data.to("cpu") for name, tensor in tensors.items()}
            self._host.append(host)
            self._assign(index, host)
            for module in block.modules():
                self._handles.append(module.register_forward_pre_hook(self._hook(index)))

    @property
    def resident(self) -> tuple[int, ...]:
        """Indices of the blocks on the device, least recently used first."""
        return tuple(self._resident)

    def _assign(self, index: int, tensors: dict[str, torch.Tensor]) -> None:
        block = self.blocks[index]
        for name, value in tensors.items():
            owner_name, _, leaf = name.rpartition(".")
            owner = block.get_submodule(owner_name) if owner_name else block
            getattr(owner, leaf).data = value

    def _hook(self, index: int):
        def hook(module: nn.Module, args: object) -> None:
            self.ensure(index)

        return hook

    def ensure(self, index: int) -> None:
        """Put block ``index`` on the device (evicting the least recently used beyond the limit)."""
        if index in self._resident:
            self._resident.move_to_end(index)
            return
        while len(self._resident) >= self.max_resident:
            evicted, _ = self._resident.popitem(last=False)
            self._assign(evicted, self._host[evicted])
        on_device = {
            name: value.to(self.device, non_blocking=True) for name, value in self._host[index].items()
        }
        self._assign(index, on_device)
        self._resident[index] = None
        self.loads += 1
        self.peak_resident = max(self.peak_resident, len(self._resident))

    def offload_all(self) -> None:
        """Send every resident block back to its CPU copy (e.g. after sampling)."""
        for index in list(self._resident):
            self._assign(index, self._host[index])
        self._resident.clear()

    def remove(self) -> None:
        """Remove the hooks and put every block on the device for good."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for index in range(len(self.blocks)):
            self._assign(index, {k: v.to(self.device) for k, v in self._host[index].items()})
        self._resident.clear()


@contextlib.contextmanager
def onloaded(module: nn.Module, device: torch.device, *, offload: bool) -> Iterator[nn.Module]:
    """Run ``module`` on ``device`` and, when ``offload``, move it back to the CPU afterwards (an absent
    component, None, is left alone)."""
    if not offload or module is None:
        yield module
        return
    module.to(device)
    try:
        yield module
    finally:
        module.to("cpu")


def quantize_int8_weights(model: nn.Module) -> nn.Module:
    """torchao int8 weight-only quantisation of every ``nn.Linear`` (in place; returns ``model``).

    Raises:
        SkyReelsError: torchao is not installed.
    """
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as error:  # pragma: no cover - torchao is a dependency here
        raise SkyReelsError(
            "quantization: int8 weights need torchao (pip install torchao), which is not importable"
        ) from error
    quantize_(model, Int8WeightOnlyConfig())
    # ``from_pretrained`` tensors can view a memory-mapped shard: one surviving view (a norm, an
    # embedding) keeps the whole file mapping resident, fp32 linears included. Own copies of the
    # remaining plain tensors let the mapping go (measured on `small`: 3.5 GB -> 0.9 GB host RSS).
    with torch.no_grad():
        for module in model.modules():
            for parameter in module._parameters.values():
                if parameter is not None and type(parameter.data) is torch.Tensor:
                    parameter.data = parameter.data.clone()
            for name, buffer in module._buffers.items():
                if buffer is not None and type(buffer) is torch.Tensor:
                    module._buffers[name] = buffer.clone()
    return model
