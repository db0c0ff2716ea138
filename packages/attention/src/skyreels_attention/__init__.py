"""Pluggable attention backends, a block-sparse op with our own Triton kernel, and Ulysses
sequence parallelism. Layout everywhere: `[B, L, H, D]`."""

from .api import (
    AUTO_PRIORITY,
    AttentionConfig,
    AttentionKernel,
    BackendUnavailableError,
    attention,
    backend_names,
    get_backend,
    select_backend,
)
from .backends import AttentionBackend, BackendCapabilities, naive_attention
from .backends.base import autocast_off
from .block_sparse import (
    BlockSparseBackendError,
    block_sparse_attention,
    block_sparse_backend_status,
)
from .finite_checks import (
    FiniteChecks,
    NonFiniteInputError,
    check_finite,
    finite_checks,
    get_finite_checks,
    set_finite_checks,
)
from .masks import AttentionMask, BlockMask, DenseMask, KeyPaddingMask, MaskKind
from .sequence_parallel import (
    UlyssesAttention,
    UlyssesAttentionOutput,
    gather_sequence,
    shard_sequence,
    ulysses_attention,
    ulysses_cross_attention,
)
from .status import backend_report, print_backends
from .value_checks import set_value_checks, value_checks, value_checks_enabled

__all__ = [
    "AUTO_PRIORITY",
    "AttentionBackend",
    "AttentionConfig",
    "AttentionKernel",
    "AttentionMask",
    "BackendCapabilities",
    "BackendUnavailableError",
    "BlockMask",
    "BlockSparseBackendError",
    "DenseMask",
    "FiniteChecks",
    "KeyPaddingMask",
    "MaskKind",
    "NonFiniteInputError",
    "UlyssesAttention",
    "UlyssesAttentionOutput",
    "attention",
    "autocast_off",
    "backend_names",
    "backend_report",
    "block_sparse_attention",
    "block_sparse_backend_status",
    "check_finite",
    "finite_checks",
    "gather_sequence",
    "get_backend",
    "get_finite_checks",
    "naive_attention",
    "print_backends",
    "select_backend",
    "set_finite_checks",
    "set_value_checks",
    "shard_sequence",
    "ulysses_attention",
    "ulysses_cross_attention",
    "value_checks",
    "value_checks_enabled",
]
