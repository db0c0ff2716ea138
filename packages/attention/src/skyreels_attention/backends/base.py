"""What every dense attention backend declares and answers.

A backend states its capabilities as data (`BackendCapabilities`) and answers
`not_supported_reasons(q, k, v, mask)` with every reason it cannot run those inputs here. The
dispatcher never guesses: an explicitly requested backend with reasons raises, listing them.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..masks import AttentionMask, MaskKind, mask_kind

__all__ = ["AttentionBackend", "BackendCapabilities", "Capabilities", "autocast_off"]


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Autocast disabled for `device`'s type (a no-op where autocast does not exist).

    The references promise float32 (float64) math; under `torch.autocast` their matmuls would
    otherwise run in the autocast dtype even on float32 operands.
    """
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.float16` -> `float16`, for messages and capability tables."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What every backend, dense or block-sparse, declares: where it runs and which head dims.

    `dtypes` maps a device key (a device type, or a backend-specific key such as "any") to the
    dtypes the backend runs there; `head_dims` None means any head dim up to `max_head_dim` (None:
    no limit) that is a multiple of `head_dim_multiple`.
    """

    dtypes: dict[str, frozenset[torch.dtype]]
    head_dims: tuple[int, ...] | None = None
    head_dim_multiple: int = 1
    max_head_dim: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self.dtypes)

    def describe_dtypes(self) -> str:
        return "; ".join(
            f"{dev}: {', '.join(sorted(dtype_name(d) for d in dts))}" for dev, dts in self.dtypes.items()
        )

    def describe_head_dims(self) -> str:
        if self.head_dims is not None:
            return ", ".join(map(str, self.head_dims))
        text = "any" if self.max_head_dim is None else f"<= {self.max_head_dim}"
        return text + (f", multiple of {self.head_dim_multiple}" if self.head_dim_multiple > 1 else "")

    def device_dtype_reasons(self, device: str, dtype: torch.dtype) -> list[str]:
        """Why tensors of `dtype` on `device` (a key of `dtypes`) cannot run here."""
        if device not in self.dtypes:
            return [f"device {device!r} not supported (supports {', '.join(self.devices)})"]
        if dtype not in self.dtypes[device]:
            allowed = ", ".join(sorted(dtype_name(d) for d in self.dtypes[device]))
            return [f"dtype {dtype_name(dtype)} not supported on {device} (supports {allowed})"]
        return []

    def head_dim_reasons(self, head_dim: int) -> list[str]:
        if (
            (self.head_dims is not None and head_dim not in self.head_dims)
            or head_dim % self.head_dim_multiple
            or (self.max_head_dim is not None and head_dim > self.max_head_dim)
        ):
            return [f"head dim {head_dim} not supported (supports {self.describe_head_dims()})"]
        return []


@dataclass(frozen=True, kw_only=True)
class BackendCapabilities(Capabilities):
    """Declared limits of a dense backend: `Capabilities` plus masks, backward and determinism."""

    mask_kinds: frozenset[MaskKind]
    max_head_dim: int | None = 1024
    supports_backward: bool = True
    cpu_backward: bool = True
    deterministic: bool = True

    def describe(self) -> dict[str, str]:
        """A flat, printable summary (used by `print_backends`)."""
        return {
            "devices/dtypes": self.describe_dtypes(),
            "head dims": self.describe_head_dims(),
            "masks": ", ".join(k.value for k in MaskKind if k in self.mask_kinds),
            "backward": ("yes" if self.cpu_backward else "GPU only") if self.supports_backward else "no",
            "deterministic": "yes" if self.deterministic else "no",
        }


class AttentionBackend(abc.ABC):
    """Base class of the dense backends. Subclasses set `name` and `capabilities`."""

    name: str
    capabilities: BackendCapabilities

    def environment_reasons(self) -> list[str]:
        """Why this backend cannot run on this machine at all (missing library, no GPU, ...)."""
        return []

    def not_supported_reasons(
        self, q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | None = None
    ) -> list[str]:
        """Every reason this backend cannot compute `attention(q, k, v, mask=mask)` here."""
        caps = self.capabilities
        reasons = list(self.environment_reasons())
        device = q.device.type
        reasons += caps.device_dtype_reasons(device, q.dtype)
        reasons += caps.head_dim_reasons(q.shape[-1])
        kind = mask_kind(mask)
        if kind not in caps.mask_kinds:
            reasons.append(f"mask kind {kind.value!r} not supported (would be dropped)")
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        if needs_grad and not caps.supports_backward:
            reasons.append("no backward pass, but an input requires grad")
        elif needs_grad and device == "cpu" and not caps.cpu_backward:
            reasons.append("no backward pass on CPU, but an input requires grad")
        reasons.extend(self.extra_reasons(q, k, v, mask))
        return reasons

    def extra_reasons(self, q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | None) -> list[str]:
        """Backend-specific checks beyond the declared capabilities."""
        return []

    @abc.abstractmethod
    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | None, scale: float) -> Tensor:
        """q `[B, Lq, H, D]`, k/v `[B, Lk, H, D]` -> `[B, Lq, H, D]` in q's dtype."""
