"""The one attention entry point: `attention(q, k, v, *, mask, scale, backend)`.

Backend selection, in order: the `backend` argument; else the backend an `AttentionKernel`
module was configured with; else the first backend of `AUTO_PRIORITY[device]` that can run the
inputs without dropping the mask. An explicitly requested backend that cannot run raises
`BackendUnavailableError` listing every reason; it never falls back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from torch import Tensor, nn

from .backends import BACKEND_CLASSES, AttentionBackend
from .finite_checks import check_finite
from .masks import AttentionMask, mask_kind

__all__ = [
    "AUTO_PRIORITY",
    "AttentionConfig",
    "AttentionKernel",
    "BackendUnavailableError",
    "attention",
    "backend_names",
    "get_backend",
    "select_backend",
]

# Fastest first. flex is never chosen automatically: it compiles on first use and has no CPU
# backward; ask for it by name.
AUTO_PRIORITY: dict[str, tuple[str, ...]] = {
    "cuda": ("flash", "xformers", "sdpa", "reference"),
    "cpu": ("sdpa", "reference"),
    "mps": ("sdpa", "reference"),
}


class BackendUnavailableError(ValueError):
    """No (requested) backend can run these inputs. `reasons` maps backend name -> reasons."""

    def __init__(self, message: str, reasons: dict[str, list[str]]):
        lines = [message] + [f"  {name}: {'; '.join(rs)}" for name, rs in reasons.items()]
        super().__init__("\n".join(lines))
        self.reasons = reasons


def backend_names() -> tuple[str, ...]:
    return tuple(BACKEND_CLASSES)


@cache
def get_backend(name: str) -> AttentionBackend:
    """The process-wide instance of a backend (created once: it probes imports at creation)."""
    if name not in BACKEND_CLASSES:
        raise ValueError(f"backend: expected one of {', '.join(BACKEND_CLASSES)}, got {name!r}")
    return BACKEND_CLASSES[name]()


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | None) -> None:
    for arg, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{arg}: expected a torch.Tensor [B, L, H, D], got {type(t).__name__}")
        if t.ndim != 4:
            raise ValueError(f"{arg}: expected 4 dims [B, L, H, D], got shape {list(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{arg}: expected a floating dtype, got {t.dtype}")
    if k.shape != v.shape:
        raise ValueError(
            f"k, v: expected equal shapes [B, Lk, H, D], got {list(k.shape)} and {list(v.shape)}"
        )
    if (q.shape[0], q.shape[2], q.shape[3]) != (k.shape[0], k.shape[2], k.shape[3]):
        raise ValueError(
            f"q, k: expected the same batch, heads and head dim ([B, Lq, H, D] vs [B, Lk, H, D]), "
            f"got {list(q.shape)} and {list(k.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v: expected one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v: expected one device, got {q.device}, {k.device}, {v.device}")
    kind = mask_kind(mask)  # raises TypeError on a foreign mask type
    if mask is not None:
        batch, lq, heads, _ = q.shape
        lk = k.shape[1]
        if kind.value == "key_padding":
            mask.validate(batch, lq, lk)
        else:
            mask.validate(batch, heads, lq, lk)


def select_backend(
    q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | None = None, backend: str | None = None
) -> AttentionBackend:
    """The backend `attention` would use for these inputs (raises if none / the requested cannot)."""
    if backend is not None:
        chosen = get_backend(backend)
        reasons = chosen.not_supported_reasons(q, k, v, mask)
        if reasons:
            raise BackendUnavailableError(
                f"backend={backend!r} was requested but cannot run these inputs "
                f"(q {list(q.shape)} {q.dtype} on {q.device.type}, mask {mask_kind(mask).value}):",
                {backend: reasons},
            )
        return chosen
    priority = AUTO_PRIORITY.get(q.device.type, ("reference",))
    all_reasons: dict[str, list[str]] = {}
    for name in priority:
        candidate = get_backend(name)
        reasons = candidate.not_supported_reasons(q, k, v, mask)
        if not reasons:
            return candidate
        all_reasons[name] = reasons
    raise BackendUnavailableError(
        f"no attention backend can run q {list(q.shape)} {q.dtype} on {q.device.type} "
        f"with mask {mask_kind(mask).value}:",
        all_reasons,
    )


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: AttentionMask | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> Tensor:
    """Softmax attention in the flash-attention layout.

    Args:
        q: `[B, Lq, H, D]`.
        k, v: `[B, Lk, H, D]` (Lk may differ from Lq: cross-attention).
        mask: None, `KeyPaddingMask`, `DenseMask` (bool or additive) or `BlockMask`.
        scale: logit scale, default `D ** -0.5`.
        backend: one of `backend_names()`, or None to choose automatically.

    Returns:
        `[B, Lq, H, D]` in q's dtype. Query rows with no attendable key are zero.

    Raises:
        NonFiniteInputError: q, k or v holds NaN/inf (checked on CPU by default; see `finite_checks`).
    """
    _check_inputs(q, k, v, mask)
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        check_finite(tensor, name)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return select_backend(q, k, v, mask, backend).forward(q, k, v, mask, scale)


@dataclass(frozen=True, kw_only=True)
class AttentionConfig:
    """backend: a name from `backend_names()`, or None for automatic selection per call."""

    backend: str | None = None


class AttentionKernel(nn.Module):
    """`attention` with a backend configured once, at construction; a per-call `backend` wins."""

    def __init__(self, config: AttentionConfig | None = None) -> None:
        super().__init__()
        self.config = config or AttentionConfig()
        if self.config.backend is not None:
            get_backend(self.config.backend)  # an unknown name fails here, not mid-forward

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        mask: AttentionMask | None = None,
        scale: float | None = None,
        backend: str | None = None,
    ) -> Tensor:
        return attention(q, k, v, mask=mask, scale=scale, backend=backend or self.config.backend)

    def extra_repr(self) -> str:
        return f"backend={self.config.backend or 'auto'}"
