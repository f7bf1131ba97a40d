"""Fixtures for the TensorRT unit tests: test doubles injected into sys.modules for ONE test at a time."""

from __future__ import annotations

from pathlib import Path

import pytest
from trt_doubles import fake_cudart, fake_tensorrt, install_cudart, install_tensorrt, write_fake_onnx

from xinfer_sdk.accel.nvidia.engine_plan import make_build_plan
from xinfer_sdk.bundle import Manifest, TensorSpec, open_bundle, register, save_manifest
from xinfer_sdk.profiles import load_profile


@pytest.fixture
def gpu(monkeypatch):
    """A fake cuda-python runtime with one sm_86 device; returns the module (its .calls, .device_mem...)."""
    cudart = fake_cudart()
    install_cudart(monkeypatch, cudart)
    return cudart


@pytest.fixture
def trt(monkeypatch):
    """Factory: trt(version="10.3.0", dla_cores=0, build_fails=False, ...) installs a fake tensorrt module."""

    def make(version: str = "10.3.0", **kw):
        mod = fake_tensorrt(version, **kw)
        install_tensorrt(monkeypatch, mod)
        return mod

    return make


@pytest.fixture(autouse=True)
def _fresh_engine_cache(monkeypatch, tmp_path):
    from xinfer_sdk.runtime.backends.tensorrt import TensorRTBackend

    monkeypatch.setattr(TensorRTBackend, "_engines", {})
    monkeypatch.setenv("XINFER_CACHE_DIR", str(tmp_path / "user-cache"))


def make_bundle(root: Path, *, profile: str = "a10", precision: str = "fp16", max_batch_size: int = 8,
                onnx: bytes | None = None, op: str = "double") -> Path:
    """A bundle with a fake 'ONNX' model x[-1,4] -> y[-1,4] (y = 2x) and a build plan for ``profile``."""
    root.mkdir(parents=True)
    prof = load_profile(profile)
    inputs = [TensorSpec("x", "float32", (-1, 4), ("batch", None))]
    out_shape = [-1, 4] if op == "double" else [-1, 1]
    outputs = [TensorSpec("y", "float32", tuple(out_shape), ("batch", None))]
    if onnx is None:
        write_fake_onnx(root / "model.onnx", {"x": ["float32", [-1, 4]]}, {"y": ["float32", out_shape]}, op=op)
    else:
        (root / "model.onnx").write_bytes(onnx)
    plan = make_build_plan(profile=prof, precision=precision, inputs=inputs, max_batch_size=max_batch_size)
    mf = Manifest(name="tiny", inputs=inputs, outputs=outputs, precision=precision, max_batch_size=max_batch_size,
                  profile={"name": prof.name}, batch=prof.batch.to_dict(), engine_plan=plan)
    register(root, mf, "model.onnx", role="model")
    save_manifest(root, mf)
    return root


@pytest.fixture
def bundle(tmp_path):
    """Factory for opened bundles (see make_bundle)."""

    def make(name: str = "tiny.xinfer", **kw):
        return open_bundle(make_bundle(tmp_path / name, **kw))

    return make
