"""Files: atomic writes and typed, path-naming reads of JSON and safetensors."""

from skyreels_v4.io.files import (
    all_finite,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    read_json,
    read_safetensors,
    safetensors_keys,
    save_safetensors,
)

__all__ = [
    "all_finite",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "read_json",
    "read_safetensors",
    "safetensors_keys",
    "save_safetensors",
]
