"""Shared fixtures and the `gpu` marker: GPU tests skip with the reason when no CUDA device is present."""

from __future__ import annotations

import functools
import os
import sys

import pytest


@functools.lru_cache(maxsize=1)
def cuda_device_reason() -> str | None:
    """None when a CUDA device is usable, else why not (a sentence for the skip message).

    Uses the product's own probe, so a GPU CI whose cuda-python is too new for its driver says so
    (cudaErrorInsufficientDriver) instead of quietly skipping every gpu test as 'no CUDA device'."""
    from xinfer_sdk.accel.nvidia import _cudart
    from xinfer_sdk.errors import MissingDependency

    try:
        cudart = _cudart.load()
    except MissingDependency:
        return "no GPU here: cuda-python is not installed (pip install 'xinfer-sdk[gpu]') and no CUDA device"
    count, why = _cudart.device_status(cudart)
    if count == 0:
        return f"no CUDA device: {why}"
    return None


def pytest_collection_modifyitems(config, items):
    reason = cuda_device_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"gpu test skipped: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def cli_run(monkeypatch, capsys):
    """Run the xinfer-sdk CLI in-process: returns (exit_code, stdout, stderr)."""
    from xinfer_sdk.cli import main

    def run(*args: str, env: dict | None = None):
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(autouse=True)
def _no_user_env(monkeypatch):
    # Tests must not depend on the developer's own profile settings.
    monkeypatch.delenv("XINFER_PROFILES_PATH", raising=False)
    monkeypatch.delenv("XINFER_PROFILE", raising=False)


PYTHON = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
