"""Repository-wide pytest set-up.

Triton kernels only run on this project's CPU machines through the interpreter. Triton reads
TRITON_INTERPRET when a kernel is decorated, so it must be set before any kernel module is
imported; doing it here (the first file pytest loads) keeps it out of library code.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
