"""What every dense attention backend declares and answers.

A backend states its capabilities as data (`BackendCapabilities`) and answers
`not_supported_reasons(q, k, v, mask)` with every reason it cannot run those inputs here. The
dispatcher never guesses: an explicitly requested backend with reasons raises, listing them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..masks import AttentionMask, MaskKind, mask_kind

__all__ = ["AttentionBackend", "BackendCapabilities"]


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.float16` -> `float16`, for messages and capability tables."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True, kw_only=True)
class BackendCapabilities:
    """Declared limits of a backend. `dtypes` maps a device type to the dtypes it runs there."""

    dtypes: dict[str, frozenset[torch.dtype]]
    mask_kinds: frozenset[MaskKind]
    max_head_dim: int = 1024
    head_dim_multiple: int = 1
    supports_backward: bool = True
    cpu_backward: bool = True
    deterministic: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self.dtypes)

    def describe(self) -> dict[str, str]:
        """A flat, printable summary (used by `print_backends`)."""
        return {
            "devices/dtypes": "; ".join(
                f"{dev}: {', '.join(sorted(dtype_name(d) for d in dts))}" for dev, dts in self.dtypes.items()
            ),
            "head dims": f"<= {self.max_head_dim}"
            + (f", multiple of {self.head_dim_multiple}" if self.head_dim_multiple > 1 else ""),
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
        if device not in caps.dtypes:
            reasons.append(f"device {device!r} not supported (supports {', '.join(caps.devices)})")
        elif q.dtype not in caps.dtypes[device]:
            allowed = ", ".join(sorted(dtype_name(d) for d in caps.dtypes[device]))
            reasons.append(f"dtype {dtype_name(q.dtype)} not supported on {device} (supports {allowed})")
        head_dim = q.shape[-1]
        if head_dim > caps.max_head_dim or head_dim % caps.head_dim_multiple:
            reasons.append(
                f"head dim {head_dim} not supported (needs <= {caps.max_head_dim}"
                + (f" and a multiple of {caps.head_dim_multiple})" if caps.head_dim_multiple > 1 else ")")
            )
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
