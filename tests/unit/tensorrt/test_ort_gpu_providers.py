"""ONNX Runtime's GPU provider chain against a test double of ``onnxruntime`` that behaves like its Python layer:
the TensorRT EP creates only the last level of its cache dir (``fs::create_directory``) and, when that fails,
``InferenceSession.__init__`` retries with ['CUDAExecutionProvider', 'CPUExecutionProvider'] and no options
(onnxruntime_inference_collection.py). Review D4 (cache dir, silent fallback), D6 (TF32), D12 (``gpu:N``)."""

from __future__ import annotations

import logging
import os
import sys
import types

import numpy as np
import pytest

from xinfer_sdk.bundle import Bundle
from xinfer_sdk.errors import BackendUnavailable, UserError
from xinfer_sdk.profiles import load_profile
from xinfer_sdk.runtime.backends import onnxruntime as ort_backend
from xinfer_sdk.runtime.backends.base import normalize_device
from xinfer_sdk.runtime.backends.onnxruntime import OnnxRuntimeBackend

A10 = load_profile("a10")
GPU_EPS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def fake_onnxruntime(*, broken: tuple[str, ...] = ()) -> types.ModuleType:
    """``broken``: providers that fail to start (their libraries/driver missing)."""
    ort = types.ModuleType("onnxruntime")
    ort.sessions = []  # (providers as passed, providers in use)

    class SessionOptions:
        def __init__(self):
            self.config = {}

        def add_session_config_entry(self, k, v):
            self.config[k] = v

    ort.SessionOptions = SessionOptions
    ort.ExecutionMode = types.SimpleNamespace(ORT_SEQUENTIAL=0)
    ort.GraphOptimizationLevel = types.SimpleNamespace(ORT_ENABLE_ALL=99)

    def _starts(name, opts):
        if name in broken:
            return False
        if name == "TensorrtExecutionProvider":  # create_directory: the parent must exist
            return os.path.isdir(os.path.dirname(opts["trt_engine_cache_path"].rstrip("/")))
        return True

    class InferenceSession:
        def __init__(self, path, so, providers):
            names = [p if isinstance(p, str) else p[0] for p in providers]
            opts = [{} if isinstance(p, str) else dict(p[1]) for p in providers]
            try:
                self._create(names, opts)
            except RuntimeError:  # ORT prints "EP Error" and retries with these, without any options
                self._create(["CUDAExecutionProvider", "CPUExecutionProvider"], [{}, {}])
            ort.sessions.append((list(providers), list(self.providers)))

        def _create(self, names, opts):
            if "TensorrtExecutionProvider" in names:
                o = opts[names.index("TensorrtExecutionProvider")]
                if not _starts("TensorrtExecutionProvider", o):
                    raise RuntimeError("TensorRT EP: Failed to create directory")
                os.mkdir(o["trt_engine_cache_path"]) if not os.path.isdir(o["trt_engine_cache_path"]) else None
            kept = [(n, o) for n, o in zip(names, opts) if n == "CPUExecutionProvider" or _starts(n, o)]
            self.providers, self.options = [n for n, _ in kept], dict(kept)  # a CUDA EP that fails is dropped

        def get_providers(self):
            return list(self.providers)

        def get_provider_options(self):
            return self.options

        def get_inputs(self):
            return [types.SimpleNamespace(name="x", type="tensor(float)")]

        def get_outputs(self):
            return [types.SimpleNamespace(name="y", type="tensor(float)")]

        def run(self, names, feeds):
            return [feeds["x"] * 2]

    ort.InferenceSession = InferenceSession
    return ort


@pytest.fixture
def ort(monkeypatch):
    """Factory: ort(broken=(...)) installs the double; every GPU provider is listed as working (the doctor probe
    passed), those in ``broken`` then fail inside InferenceSession."""

    def make(broken: tuple[str, ...] = ()):
        mod = fake_onnxruntime(broken=broken)
        monkeypatch.setitem(sys.modules, "onnxruntime", mod)
        monkeypatch.setattr(ort_backend, "_working_providers", lambda: GPU_EPS)
        return mod

    return make


def options(chain) -> dict:
    return {p[0]: p[1] for p in chain if not isinstance(p, str)}


def test_device_spellings_normalise_to_cuda_n():
    assert [normalize_device(d) for d in ("cpu", "CPU", "cuda", "gpu", "gpu:1", "cuda:2", " Cuda:0 ")] == \
        ["cpu", "cpu", "cuda:0", "cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    with pytest.raises(UserError, match="'cuda:N'"):
        normalize_device("tpu:0")


def test_gpu_n_runs_on_that_gpu_not_the_cpu(ort, bundle):
    """'gpu:1' used to fail startswith('cuda') and build a CPU-only chain (review D12)."""
    ort()
    be = OnnxRuntimeBackend(bundle(), profile=A10, device="gpu:1")
    chain = be.providers()
    assert [p if isinstance(p, str) else p[0] for p in chain] == list(GPU_EPS)
    assert str(chain[0][1]["device_id"]) == "1" and chain[1][1]["device_id"] == 1
    assert OnnxRuntimeBackend.unavailable_reason(be.bundle, A10, "gpu:0") is None


def test_fp32_bundles_turn_tf32_off_in_the_cuda_ep(ort, bundle):
    """ORT's CUDA EP runs FP32 MatMul/Conv in TF32 by default (``use_tf32``, cuda_execution_provider_info.h);
    an FP32 bundle must compute in FP32 as the accuracy gate measured (review D6)."""
    ort()
    cuda = options(OnnxRuntimeBackend(bundle(precision="fp32"), profile=A10, device="cuda:0").providers())
    assert cuda["CUDAExecutionProvider"] == {"device_id": 0, "use_tf32": "0"}
    cuda = options(OnnxRuntimeBackend(bundle("h.xinfer", precision="fp16"), profile=A10, device="cuda:0").providers())
    assert cuda["CUDAExecutionProvider"] == {"device_id": 0}
    opts = {"tf32": True}
    cuda = options(OnnxRuntimeBackend(bundle("o.xinfer", precision="fp32"), profile=A10, device="cuda:0",
                                   options=opts).providers())
    assert cuda["CUDAExecutionProvider"] == {"device_id": 0}


def test_read_only_bundle_gets_its_tensorrt_ep_cache_dir(ort, bundle, monkeypatch, tmp_path):
    """The user-cache path's parents did not exist: ORT's TensorRT EP could not create its cache and ORT fell back
    to the CUDA EP on device 0 without options (review D4)."""
    mod = ort()
    b = bundle(precision="fp32")
    monkeypatch.setattr(Bundle, "engines_writable", lambda self: False)  # a readOnly volume
    with OnnxRuntimeBackend(b, profile=A10, device="cuda:1") as be:
        info = be.describe()
        assert info["providers"] == list(GPU_EPS) and "providers_dropped" not in info
        cache = options(mod.sessions[0][0])["TensorrtExecutionProvider"]["trt_engine_cache_path"]
        assert cache.startswith(str(tmp_path / "user-cache" / "engines")) and os.path.isdir(cache)
        assert be.session.get_provider_options()["CUDAExecutionProvider"]["device_id"] == 1
    assert len(mod.sessions) == 1


def test_a_silent_fallback_is_redone_with_our_options(ort, bundle, caplog):
    """When ORT drops the TensorRT EP anyway, its own retry has no device_id: the session is made again with the
    providers that started and our options, and a warning names the dropped one (review D4)."""
    mod = ort(broken=("TensorrtExecutionProvider",))
    with caplog.at_level(logging.WARNING), OnnxRuntimeBackend(bundle(precision="fp32"), profile=A10,
                                                             device="cuda:1") as be:
        info = be.describe()
        assert info["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
        assert info["providers_dropped"] == ["TensorrtExecutionProvider"]
        assert be.session.get_provider_options()["CUDAExecutionProvider"] == {"device_id": 1, "use_tf32": "0"}
        np.testing.assert_array_equal(be.infer({"x": np.ones((1, 4), np.float32)})["y"], np.full((1, 4), 2.0))
    assert len(mod.sessions) == 2 and "could not start TensorrtExecutionProvider" in caplog.text


def test_no_gpu_provider_started_for_a_cuda_device_is_refused(ort, bundle):
    """A cuda device must never run on the CPU silently."""
    ort(broken=("TensorrtExecutionProvider", "CUDAExecutionProvider"))
    with pytest.raises(BackendUnavailable, match="did not start for cuda:0"):
        OnnxRuntimeBackend(bundle(), profile=A10, device="cuda").activate()
