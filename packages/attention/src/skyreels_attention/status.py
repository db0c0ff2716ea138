"""`print_backends()`: which backends work on this machine, and why the others do not."""

from __future__ import annotations

import io
import sys
from typing import TextIO

import torch

from .api import AUTO_PRIORITY, backend_names, get_backend

__all__ = ["backend_report", "print_backends"]


def _block_sparse_entries() -> dict[str, dict[str, object]]:
    from .block_sparse import block_sparse_backend_capabilities, block_sparse_backend_status

    capabilities = block_sparse_backend_capabilities()
    return {
        f"block_sparse/{name}": {
            "kind": "block-sparse",
            "available": not reasons,
            "reasons": reasons,
            "capabilities": {k: v for k, v in capabilities[name].items() if k != "notes"},
            "notes": [capabilities[name]["notes"]] if capabilities[name].get("notes") else [],
        }
        for name, reasons in block_sparse_backend_status().items()
    }


def backend_report() -> dict[str, dict[str, object]]:
    """Per backend: `available` (bool), `reasons` (list[str]) and its declared capabilities."""
    report: dict[str, dict[str, object]] = {}
    for name in backend_names():
        backend = get_backend(name)
        reasons = backend.environment_reasons()
        report[name] = {
            "kind": "dense",
            "available": not reasons,
            "reasons": reasons,
            "capabilities": backend.capabilities.describe(),
            "notes": list(backend.capabilities.notes),
        }
    report.update(_block_sparse_entries())
    return report


def print_backends(file: TextIO | None = None) -> str:
    """Print (and return) a readable table of attention backends on this machine."""
    out = io.StringIO()
    devices = "cpu" + (f", cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "")
    out.write(f"skyreels-attention backends  (torch {torch.__version__}; devices: {devices})\n\n")
    for name, entry in backend_report().items():
        mark = "OK " if entry["available"] else "-- "
        out.write(f"{mark}{name}\n")
        for reason in entry["reasons"]:
            out.write(f"      not here: {reason}\n")
        for key, value in entry.get("capabilities", {}).items():
            out.write(f"      {key:<15} {value}\n")
        for note in entry.get("notes", []):
            out.write(f"      note            {note}\n")
    out.write("\nautomatic choice (first that runs the inputs without dropping the mask):\n")
    for device, names in AUTO_PRIORITY.items():
        out.write(f"  {device:<5} {' > '.join(names)}\n")
    text = out.getvalue()
    (file or sys.stdout).write(text)
    return text
