"""Fixtures of the GPU suite: the skips that say why (helpers live in gpu_models.py).

Every test here is ``gpu``-marked: tests/conftest.py skips them with the reason when no CUDA device is
visible; ``trt_ready`` skips when TensorRT is not usable (not installed, or the driver is too old for it).
None of this has run on the machine the code was written on (no GPU there).
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def trt_ready():
    from xinfer_sdk.converters.tensorrt_engine import unavailable_reason

    why = unavailable_reason()
    if why:
        pytest.skip(f"TensorRT not usable here: {why}")


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    from xinfer_sdk.runtime.backends.tensorrt import TensorRTBackend

    monkeypatch.setattr(TensorRTBackend, "_engines", {})
    monkeypatch.setenv("XINFER_CACHE_DIR", str(tmp_path / "user-cache"))
