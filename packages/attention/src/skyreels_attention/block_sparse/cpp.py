"""The `cpp` backend: our C++ block-sparse kernel for the CPU (fp32, forward and backward).

`csrc/block_sparse_cpu.cpp` reads the selected key/value blocks in place (BLAS sgemm from
PyTorch's own BLAS, online softmax with a vectorised exp) instead of gathering them, which is what
limits the `gather` backend on CPUs. It is compiled on first use with `torch.utils.cpp_extension`
(a C++ compiler and `ninja` are needed; about 10 s once, then cached under `TORCH_EXTENSIONS_DIR`,
default `~/.cache/torch_extensions`). The build is specific to this CPU (`-march=native`): its
name carries a digest of the source, the compiler flags, the torch and Python versions and the
CPU's model and flags, so a shared cache never hands one machine another machine's binary. A line
on stderr says when a compile starts.

`SKYREELS_ATTENTION_NO_CPP=1` switches the backend off (then `gather` is the automatic CPU choice).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import sys
from pathlib import Path

import torch
from torch import Tensor

from .index import num_blocks, reverse_block_index

__all__ = ["DISABLE_ENV", "block_sparse_attention_cpp", "cpp_kernel_error"]

DISABLE_ENV = "SKYREELS_ATTENTION_NO_CPP"
_SOURCE = Path(__file__).with_name("csrc") / "block_sparse_cpu.cpp"
_CFLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-std=c++17")
_LDFLAGS = ("-fopenmp",)


def _cpu_fingerprint() -> str:
    """The CPU model and flag lines of /proc/cpuinfo (the machine name elsewhere)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    keep = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.startswith(keep)}))


def _extension_name() -> str:
    digest = hashlib.sha256()
    parts = (_SOURCE.read_bytes(), " ".join(_CFLAGS + _LDFLAGS).encode(), torch.__version__.encode())
    for part in (*parts, sys.version.encode()):
        digest.update(part)
    digest.update(_cpu_fingerprint().encode())
    return f"skyreels_block_sparse_cpu_{digest.hexdigest()[:16]}"


def _missing_tools() -> str | None:
    if os.environ.get(DISABLE_ENV, "0") not in ("", "0"):
        return f"switched off by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} not found; install g++ or set CXX)"
    if importlib.util.find_spec("ninja") is None and shutil.which("ninja") is None:
        return "ninja is not installed (pip install ninja)"
    return None


_KERNEL_STATE: dict[str, str | None] = {}  # "error" -> the answer, once known


@torch.compiler.assume_constant_result  # torch.compile treats the answer as a constant, no tracing
def cpp_kernel_error() -> str | None:
    """None once the kernel is built and loaded (building it on the first call), else why not.

    Asked once per process (a plain dict cache rather than functools.cache, which torch.compile
    would look through and trace into the build's file system calls).
    """
    if "error" not in _KERNEL_STATE:
        _KERNEL_STATE["error"] = _build_and_load()
    return _KERNEL_STATE["error"]


def _build_and_load() -> str | None:
    missing = _missing_tools()
    if missing is not None:
        return missing
    from torch.utils import cpp_extension

    name = _extension_name()
    build_dir = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()) / name
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        if not any(build_dir.glob(f"{name}.*")):
            # Ten silent seconds look like a hang: say once what is happening.
            print(
                f"skyreels-attention: compiling the C++ block-sparse kernel for this CPU (once, about 10 s) "
                f"in {build_dir}",
                file=sys.stderr,
                flush=True,
            )
        cpp_extension.load(
            name=name,
            sources=[str(_SOURCE)],
            extra_cflags=list(_CFLAGS),
            extra_ldflags=list(_LDFLAGS),
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=False,
        )
    except Exception as exc:  # compiler errors, a missing BLAS symbol, a locked cache, ...
        message = " ".join(str(exc).split())
        return f"the C++ kernel failed to build or load ({type(exc).__name__}: {message[-400:]})"
    _register_fakes()
    return None


def _register_fakes() -> None:
    """Shape-only versions of the two ops, so that torch.compile and FakeTensor can trace them."""

    @torch.library.register_fake("skyreels_block_sparse_cpu::forward")
    def _forward_fake(q, k, v, block_index, block_counts, kv_valid, block_size, scale):
        batch, lq, heads, dim = q.shape
        return [q.new_empty(batch, lq, heads, dim), q.new_empty(batch, heads, lq)]

    @torch.library.register_fake("skyreels_block_sparse_cpu::backward")
    def _backward_fake(grad_out, q, k, v, *rest):
        return [q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)]


def _ops():
    return torch.ops.skyreels_block_sparse_cpu


class _BlockSparseCpp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, block_index, block_counts, kv_valid, block_size, scale):
        out, lse = _ops().forward(q, k, v, block_index, block_counts, kv_valid, block_size, scale)
        ctx.save_for_backward(q, k, v, out, lse, block_index, block_counts, kv_valid)
        ctx.block_size, ctx.scale = block_size, scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out, lse, block_index, block_counts, kv_valid = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        delta = (grad_out * out).sum(-1).transpose(1, 2).contiguous()  # [B, H, Lq]
        reverse_index, reverse_counts = reverse_block_index(
            block_index, block_counts, num_blocks(k.shape[1], ctx.block_size)
        )
        grad_q, grad_k, grad_v = _ops().backward(
            grad_out,
            q,
            k,
            v,
            lse,
            delta,
            block_index,
            block_counts,
            reverse_index,
            reverse_counts,
            kv_valid,
            ctx.block_size,
            ctx.scale,
        )
        return grad_q, grad_k, grad_v, None, None, None, None, None


def block_sparse_attention_cpp(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_index: Tensor,
    block_counts: Tensor,
    *,
    block_size: int,
    kv_valid_lengths: Tensor | None,
    scale: float,
) -> Tensor:
    """Block-sparse attention with the C++ kernel; inputs already validated (fp32, CPU).

    q [B, Lq, H, D], k/v [B, Lk, H, D] (any strides with a contiguous last dim), block_index
    [B, H, nQB, C] and block_counts [B, H, nQB] int32, kv_valid_lengths [B] or None -> [B, Lq, H, D].
    """
    error = cpp_kernel_error()
    if error is not None:
        raise RuntimeError(f"the cpp block-sparse kernel is unavailable: {error}")
    # BLAS reads each head's [L, D] rows with leading dimension stride(1): it must be >= D (an
    # `expand`ed or overlapping view has 0 or less) and the last dim must be contiguous.
    q, k, v = (t if t.stride(-1) == 1 and t.stride(1) >= t.shape[-1] else t.contiguous() for t in (q, k, v))
    if kv_valid_lengths is None:
        kv_valid = torch.full((q.shape[0],), k.shape[1], dtype=torch.int32)
    else:
        kv_valid = kv_valid_lengths.to(torch.int32).contiguous()
    index = block_index.to(torch.int32).contiguous()
    counts = block_counts.to(torch.int32).contiguous()
    return _BlockSparseCpp.apply(q, k, v, index, counts, kv_valid, int(block_size), float(scale))
