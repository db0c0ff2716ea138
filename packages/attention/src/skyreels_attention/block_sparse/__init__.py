"""Block-sparse attention: `block_sparse_attention` and its backends (torch reference, gather +
SDPA, our C++ CPU kernel, flex, our Triton kernel). See docs/block-sparse-attention.md for the
index format and the kernels."""

from .api import block_sparse_attention
from .backends import (
    AUTO_PRIORITY,
    BlockSparseBackend,
    BlockSparseBackendError,
    BlockSparseBackendName,
    BlockSparseCapabilities,
    block_sparse_backend_capabilities,
    block_sparse_backend_status,
    get_block_sparse_backend,
)
from .index import blocks_to_keep, random_block_index, reverse_block_index, selection_table
from .reference import block_sparse_attention_reference

__all__ = [
    "AUTO_PRIORITY",
    "BlockSparseBackend",
    "BlockSparseBackendError",
    "BlockSparseBackendName",
    "BlockSparseCapabilities",
    "block_sparse_attention",
    "block_sparse_attention_reference",
    "block_sparse_backend_capabilities",
    "block_sparse_backend_status",
    "blocks_to_keep",
    "get_block_sparse_backend",
    "random_block_index",
    "reverse_block_index",
    "selection_table",
]
