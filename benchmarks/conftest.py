"""Shared benchmark set-up: record the machine in every result."""

from __future__ import annotations

import platform

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _fresh_compile_caches() -> None:
    """Each benchmark file starts with empty torch.compile caches: compiled variants of earlier
    files neither hold memory nor count towards the recompile limit."""
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for the module's benchmarks (``pytestmark = pytest.mark.usefixtures(...)``):
    on a shared 2-core machine two OpenMP threads make timings erratic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def bench_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cuda_device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    machine_info["platform"] = platform.platform()
