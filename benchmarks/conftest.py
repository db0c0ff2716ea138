"""Shared benchmark set-up: record the machine in every result."""

from __future__ import annotations

import platform

import pytest
import torch


@pytest.fixture
def bench_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cuda_device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    machine_info["platform"] = platform.platform()
