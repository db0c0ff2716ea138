"""Dense attention backends, one module each. `BACKEND_CLASSES` is the registry, in the order
`print_backends` lists them."""

from .base import AttentionBackend, BackendCapabilities
from .flash import FlashBackend
from .flex import FlexBackend
from .reference import ReferenceBackend, naive_attention
from .sdpa import SdpaBackend
from .xformers import XformersBackend

BACKEND_CLASSES: dict[str, type[AttentionBackend]] = {
    cls.name: cls for cls in (ReferenceBackend, SdpaBackend, FlashBackend, XformersBackend, FlexBackend)
}

__all__ = [
    "BACKEND_CLASSES",
    "AttentionBackend",
    "BackendCapabilities",
    "FlashBackend",
    "FlexBackend",
    "ReferenceBackend",
    "SdpaBackend",
    "XformersBackend",
    "naive_attention",
]
