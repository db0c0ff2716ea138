"""Block-sparse backends: what each declares it supports, why it cannot run, and dispatch.

Every backend states its capabilities as data and answers `not_supported_reasons(problem)` with
every reason it cannot run a call here. Dispatch never falls back from an explicitly requested
backend: it raises `BlockSparseBackendError` (a ValueError) listing the reasons. `backend=None`
walks `AUTO_PRIORITY` for the inputs' device and takes the first backend with no reason.
"""

from __future__ import annotations

import abc
import functools
import importlib
import importlib.util
from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

import torch
from torch import Tensor

from ..api import BackendUnavailableError
from ..backends.base import Capabilities, autocast_off, dtype_name
from .cpp import block_sparse_attention_cpp, cpp_kernel_error
from .flex import block_sparse_attention_flex, flex_import_error
from .gather import block_sparse_attention_gather
from .inputs import BlockSparseInputs, BlockSparseProblem
from .reference import block_sparse_attention_reference

__all__ = [
    "AUTO_PRIORITY",
    "BlockSparseBackend",
    "BlockSparseBackendError",
    "BlockSparseBackendName",
    "BlockSparseCapabilities",
    "block_sparse_backend_capabilities",
    "block_sparse_backend_status",
    "get_block_sparse_backend",
    "resolve_block_sparse_backend",
]

BlockSparseBackendName = Literal["torch", "gather", "cpp", "flex", "triton"]
# Automatic choice per device type. CPU takes our C++ kernel for fp32 (blocks read in place: the
# fastest there, see docs/benchmarks.md), then gather (fused SDPA on gathered blocks; fp16/bf16, or
# no compiler), never flex (compiles for seconds, no CPU backward) nor the interpreted Triton
# kernel (test-only speed).
AUTO_PRIORITY: dict[str, tuple[BlockSparseBackendName, ...]] = {
    "cuda": ("triton", "flex", "torch"),
    "cpu": ("cpp", "gather", "torch"),
}
_DEFAULT_PRIORITY: tuple[BlockSparseBackendName, ...] = ("torch",)
_LOW_AND_FULL = frozenset({torch.float16, torch.bfloat16, torch.float32})
_INTERPRETED_CPU = "cpu (TRITON_INTERPRET=1)"


class BlockSparseBackendError(BackendUnavailableError):
    """No (requested) block-sparse backend can run these inputs; `reasons` maps name -> reasons.

    A subclass of the dense API's error, so `except BackendUnavailableError` catches both.
    """


@dataclass(frozen=True, kw_only=True)
class BlockSparseCapabilities(Capabilities):
    """Declared limits: `Capabilities` (devices/dtypes, head dims) plus the devices with a backward
    pass and the block sizes (>= `min_block_size`, <= `max_block_size`, powers of two if set)."""

    backward_devices: frozenset[str]
    min_block_size: int = 1
    max_block_size: int | None = None
    block_size_power_of_two: bool = False

    def describe_block_sizes(self) -> str:
        text = f">= {self.min_block_size}"
        if self.max_block_size is not None:
            text += f", <= {self.max_block_size}"
        return text + (", power of two" if self.block_size_power_of_two else "")

    def describe(self) -> dict[str, str]:
        """A flat, printable summary (for `print_backends`)."""
        return {
            "devices/dtypes": self.describe_dtypes(),
            "head dims": self.describe_head_dims(),
            "block sizes": self.describe_block_sizes(),
            "backward": ", ".join(sorted(self.backward_devices)) or "no",
            "notes": "; ".join(self.notes),
        }


class BlockSparseBackend(abc.ABC):
    """One way to compute `block_sparse_attention`. Subclasses set `name` and `capabilities`."""

    name: ClassVar[BlockSparseBackendName]
    capabilities: ClassVar[BlockSparseCapabilities]

    def environment_reasons(self) -> list[str]:
        """Why this backend cannot run on this machine at all (missing library, no GPU, ...)."""
        return []

    def not_supported_reasons(self, problem: BlockSparseProblem) -> list[str]:
        """Every reason this backend cannot run `problem` here (empty: it can)."""
        caps = self.capabilities
        reasons = list(self.environment_reasons())
        device = self.device_key(problem.device)
        reasons += caps.device_dtype_reasons(device, problem.dtype)
        reasons += caps.head_dim_reasons(problem.head_dim)
        bs = problem.block_size
        if (
            bs < caps.min_block_size
            or (caps.max_block_size is not None and bs > caps.max_block_size)
            or (caps.block_size_power_of_two and bs & (bs - 1))
        ):
            reasons.append(f"block_size {bs} not supported (supports {caps.describe_block_sizes()})")
        if problem.needs_grad and device in caps.dtypes and device not in caps.backward_devices:
            reasons.append(f"no backward pass on {device}, but an input requires grad")
        reasons.extend(self.extra_reasons(problem))
        return reasons

    def device_key(self, device: torch.device) -> str:
        """The key of `capabilities.dtypes` that describes tensors on `device`."""
        return device.type

    def extra_reasons(self, problem: BlockSparseProblem) -> list[str]:
        """Backend-specific checks beyond the declared capabilities."""
        return []

    @abc.abstractmethod
    def run(self, inputs: BlockSparseInputs) -> Tensor:
        """Validated inputs -> [B, Lq, H, D] in q's dtype."""


class TorchBlockSparse(BlockSparseBackend):
    name = "torch"
    capabilities = BlockSparseCapabilities(
        dtypes={"any": _LOW_AND_FULL | {torch.float64}},
        backward_devices=frozenset({"any"}),
        notes=("fp32 reference (fp64 for fp64 inputs); gathers the selected blocks",),
    )

    def device_key(self, device: torch.device) -> str:
        return "any"

    def run(self, inputs: BlockSparseInputs) -> Tensor:
        with autocast_off(inputs.q.device):  # fp32 math also under torch.autocast
            return block_sparse_attention_reference(*_tensors(inputs), **_options(inputs))


class GatherBlockSparse(BlockSparseBackend):
    name = "gather"
    capabilities = BlockSparseCapabilities(
        dtypes={"cpu": _LOW_AND_FULL, "cuda": _LOW_AND_FULL},
        backward_devices=frozenset({"cpu", "cuda"}),
        notes=("gathers the selected blocks per query block and runs fused SDPA on them; autograd backward",),
    )

    def run(self, inputs: BlockSparseInputs) -> Tensor:
        return block_sparse_attention_gather(*_tensors(inputs), **_options(inputs))


class CppBlockSparse(BlockSparseBackend):
    name = "cpp"
    capabilities = BlockSparseCapabilities(
        dtypes={"cpu": frozenset({torch.float32})},
        backward_devices=frozenset({"cpu"}),
        max_block_size=512,
        notes=("our C++ CPU kernel: blocks read in place, online softmax; built on first use (~10 s)",),
    )

    def environment_reasons(self) -> list[str]:
        error = cpp_kernel_error()  # builds the kernel the first time it is asked
        return [] if error is None else [error]

    def run(self, inputs: BlockSparseInputs) -> Tensor:
        return block_sparse_attention_cpp(*_tensors(inputs), **_options(inputs))


class FlexBlockSparse(BlockSparseBackend):
    name = "flex"
    capabilities = BlockSparseCapabilities(
        # CPU: fp32 only. torch 2.13's Inductor emits C++ that does not compile for half-precision
        # flex kernels once shapes have become dynamic (seen in the conformance suite).
        dtypes={"cpu": frozenset({torch.float32}), "cuda": _LOW_AND_FULL},
        backward_devices=frozenset({"cuda"}),
        head_dim_multiple=8,
        max_head_dim=256,
        min_block_size=16,
        block_size_power_of_two=True,
        notes=("torch.compile'd flex_attention; compiles on first use per shape (seconds)",),
    )

    def environment_reasons(self) -> list[str]:
        error = flex_import_error()
        return [] if error is None else [f"torch.nn.attention.flex_attention is not importable ({error})"]

    def extra_reasons(self, problem: BlockSparseProblem) -> list[str]:
        # torch 2.13's flex backward on recent GPUs (sm90/sm100; sm80 below 64) has one fp16/bf16
        # tile config, 64x128 / 128x64, and drops configs whose tiles do not divide the block size
        # before any kernel option applies: smaller blocks cannot compile (NoValidChoicesError).
        if (
            problem.needs_grad
            and problem.device.type == "cuda"
            and problem.dtype in (torch.float16, torch.bfloat16)
            and problem.block_size < 128
        ):
            dtype, size = dtype_name(problem.dtype), problem.block_size
            return [
                f"no CUDA backward for {dtype} with block_size {size} < 128 "
                "(torch's flex backward tiles are 128 wide); use triton, or fp32"
            ]
        return []

    def run(self, inputs: BlockSparseInputs) -> Tensor:
        tensors = _tensors(inputs)
        if not inputs.problem.needs_grad:
            # Compiled flex refuses CPU inputs that require grad even under torch.no_grad().
            tensors = tuple(t.detach() for t in tensors)
        return block_sparse_attention_flex(*tensors, **_options(inputs))


@functools.cache
def _triton_module_or_error() -> tuple[object | None, str]:
    if importlib.util.find_spec("triton") is None:
        return None, "triton is not installed (pip install 'skyreels-attention[triton]')"
    try:
        # Imported by name, on first use: triton stays out of `import skyreels_attention`, and
        # packages above this one reach the kernels only through this backend.
        return importlib.import_module(f"{__package__}.triton_op"), ""
    except Exception as exc:  # a broken triton install raises all sorts of errors at import
        return None, f"the Triton kernels failed to import ({type(exc).__name__}: {exc})"


class TritonBlockSparse(BlockSparseBackend):
    name = "triton"
    capabilities = BlockSparseCapabilities(
        dtypes={"cuda": _LOW_AND_FULL, _INTERPRETED_CPU: _LOW_AND_FULL},
        backward_devices=frozenset({"cuda", _INTERPRETED_CPU}),
        head_dims=(16, 32, 64, 128),
        min_block_size=16,
        max_block_size=256,
        block_size_power_of_two=True,
        notes=("our FlashAttention-2 style kernel, forward + backward; CPU only through the interpreter",),
    )

    def _interpreted(self) -> bool:
        module, _ = _triton_module_or_error()
        return bool(getattr(module, "INTERPRETED", False))

    def environment_reasons(self) -> list[str]:
        module, error = _triton_module_or_error()
        if module is None:
            return [error]
        if not self._interpreted() and not torch.cuda.is_available():
            return [
                "no CUDA device (TRITON_INTERPRET=1, set before the kernels are imported, runs them on CPU)"
            ]
        return []

    def device_key(self, device: torch.device) -> str:
        if device.type == "cpu" and self._interpreted():
            return _INTERPRETED_CPU
        return device.type

    def extra_reasons(self, problem: BlockSparseProblem) -> list[str]:
        if self._interpreted() and problem.device.type != "cpu":
            return [
                f"TRITON_INTERPRET=1 is set: interpreted kernels need CPU tensors, got {problem.device.type}"
            ]
        return []

    def run(self, inputs: BlockSparseInputs) -> Tensor:
        module, _ = _triton_module_or_error()
        return module.block_sparse_attention_triton(*_tensors(inputs), **_options(inputs))  # type: ignore[attr-defined]


def _tensors(inputs: BlockSparseInputs) -> tuple[Tensor, ...]:
    return inputs.q, inputs.k, inputs.v, inputs.block_index, inputs.block_counts


def _options(inputs: BlockSparseInputs) -> dict[str, object]:
    return {
        "block_size": inputs.problem.block_size,
        "kv_valid_lengths": inputs.kv_valid_lengths,
        "scale": inputs.scale,
    }


_BACKEND_CLASSES: dict[str, type[BlockSparseBackend]] = {
    cls.name: cls
    for cls in (TorchBlockSparse, GatherBlockSparse, CppBlockSparse, FlexBlockSparse, TritonBlockSparse)
}


_INSTANCES: dict[str, BlockSparseBackend] = {}


def get_block_sparse_backend(name: BlockSparseBackendName) -> BlockSparseBackend:
    """The backend instance called `name` ('torch', 'gather', 'cpp', 'flex' or 'triton')."""
    if not isinstance(name, str) or name not in _BACKEND_CLASSES:
        raise ValueError(
            f"backend must be one of {', '.join(get_args(BlockSparseBackendName))} or None, got {name!r}"
        )
    if name not in _INSTANCES:
        _INSTANCES[name] = _BACKEND_CLASSES[name]()
    return _INSTANCES[name]


def resolve_block_sparse_backend(
    problem: BlockSparseProblem, backend: BlockSparseBackendName | None
) -> BlockSparseBackend:
    """The backend to run `problem` with; raises BlockSparseBackendError listing every reason."""
    if backend is not None:
        chosen = get_block_sparse_backend(backend)
        reasons = chosen.not_supported_reasons(problem)
        if reasons:
            raise BlockSparseBackendError(
                f"block-sparse backend {backend!r} cannot run these inputs:", {backend: reasons}
            )
        return chosen
    all_reasons: dict[str, list[str]] = {}
    for name in AUTO_PRIORITY.get(problem.device.type, _DEFAULT_PRIORITY):
        candidate = get_block_sparse_backend(name)
        reasons = candidate.not_supported_reasons(problem)
        if not reasons:
            return candidate
        all_reasons[name] = reasons
    raise BlockSparseBackendError("no block-sparse backend can run these inputs:", all_reasons)


def block_sparse_backend_status() -> dict[str, list[str]]:
    """Backend name -> why it cannot run on this machine (empty list: available)."""
    return {name: get_block_sparse_backend(name).environment_reasons() for name in _BACKEND_CLASSES}


def block_sparse_backend_capabilities() -> dict[str, dict[str, str]]:
    """Backend name -> its declared capabilities, flattened for printing."""
    return {name: cls.capabilities.describe() for name, cls in _BACKEND_CLASSES.items()}
