"""The GPU paths the first suite never exercised (review D9): ONNX Runtime's TensorRT EP (also on a read-only
bundle), two workers sharing one engine, ``cuda:1``, INT8 from our Q/DQ graph, FP8 (when a step exists),
and NVML metrics under load. Each skips with the reason where this machine cannot run it."""

from __future__ import annotations

import importlib.util
import os
import threading
import time

import numpy as np
import pytest
from gpu_models import device_count, make_bundle, mlp_onnx, ort_reference, tolerance

import xinfer_sdk as xs
from xinfer_sdk.bundle import Bundle, open_bundle

pytestmark = pytest.mark.gpu


def close(y, ref, precision):
    np.testing.assert_allclose(y, ref, atol=tolerance(precision) * (float(np.abs(ref).max()) or 1.0), rtol=0)


def _ort_trt_working() -> bool:
    from xinfer_sdk.doctor import ort_providers

    return "TensorrtExecutionProvider" in ort_providers()["working"]


def test_onnxruntime_tensorrt_ep_on_a_read_only_bundle(tmp_path, monkeypatch):
    """D4: ORT's TensorRT EP needs its cache dir; on a read-only bundle it goes to the (empty) user cache.
    If that dir is missing ORT silently falls back to the CUDA EP: the providers list must show TensorRT."""
    if not _ort_trt_working():
        pytest.skip("onnxruntime-gpu with a working TensorrtExecutionProvider is not installed")
    root = make_bundle(tmp_path / "ro.xinfer", "fp16")
    monkeypatch.setenv("XINFER_CACHE_DIR", str(tmp_path / "empty-cache"))  # does not exist yet
    monkeypatch.setattr(Bundle, "engines_writable", lambda self: False)  # root ignores chmod: say it directly
    for p in sorted(root.rglob("*"), reverse=True):
        os.chmod(p, 0o444 if p.is_file() else 0o555)
    os.chmod(root, 0o555)
    x = np.random.default_rng(5).standard_normal((3, 256)).astype(np.float32)
    try:
        with xs.load(root, profile="a10", device="cuda:0", backend="onnxruntime") as model:
            y = model.infer({"x": x})["y"]
            providers = model.describe()["workers"][0]["providers"]
    finally:
        os.chmod(root, 0o755)
    assert providers[0] == "TensorrtExecutionProvider", providers
    close(y, ort_reference(root / "reference.onnx", x), "fp16")
    assert (tmp_path / "empty-cache").is_dir()


def test_two_workers_share_one_engine(trt_ready, tmp_path):
    from xinfer_sdk.runtime.backends.tensorrt import TensorRTBackend

    root = make_bundle(tmp_path / "two.xinfer", "fp16")
    rng = np.random.default_rng(6)
    xs_ = [rng.standard_normal((int(n), 256)).astype(np.float32) for n in rng.integers(1, 9, size=48)]
    with xs.load(root, profile="a10", device="cuda:0", backend="tensorrt",
                 batching={"device_concurrency": 2, "max_batch_delay": "1ms"}) as model:
        assert len(model.describe()["workers"]) == 2
        engines = list(TensorRTBackend._engines.values())
        assert len(engines) == 1 and engines[0].refs == 2  # one deserialized engine, two contexts
        results: dict[int, np.ndarray] = {}

        def call(i):
            results[i] = model.infer({"x": xs_[i]})["y"]

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(xs_))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert len(results) == len(xs_)
    for i, x in enumerate(xs_):
        close(results[i], ort_reference(root / "reference.onnx", x), "fp16")


def test_second_gpu(trt_ready, tmp_path):
    if device_count() < 2:
        pytest.skip("one CUDA device here; cuda:1 needs a second GPU")
    root = make_bundle(tmp_path / "g1.xinfer", "fp32")
    x = np.random.default_rng(7).standard_normal((4, 256)).astype(np.float32)
    with xs.load(root, profile="a10", device="cuda:1", backend="tensorrt") as model:
        y = model.infer({"x": x})["y"]
        assert model.describe()["device"] == "cuda:1"
    close(y, ort_reference(root / "reference.onnx", x), "fp32")


def test_int8_engine_from_our_qdq_graph(trt_ready, tmp_path):
    """xs.build on this GPU: symmetric INT8 Q/DQ (converters/int8.py), the accuracy gate, then the engine;
    its layer precisions must show INT8 FLOP layers (TensorRT 10: INT8+FP16 flags; 11: the Q/DQ nodes)."""
    model = mlp_onnx(tmp_path / "mlp.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(8).standard_normal((128, 256)).astype(np.float32))
    bundle = xs.build(model, "a10", "int8", calib=calib, output=tmp_path / "q.xinfer", max_batch_size=16,
                      thresholds={"min_top1_agreement": 0.0, "min_cosine": 0.95})
    step = {s.name: s for s in bundle.manifest.steps}["tensorrt"]
    assert step.status == "ok", step.message
    (lp,) = bundle.manifest.engine_layer_precisions().values()
    assert lp["verdict"] == "ok" and lp["share"].get("int8", 0) > 0, lp
    x = np.random.default_rng(9).standard_normal((8, 256)).astype(np.float32)
    with xs.load(bundle.root, profile="a10", device="cuda:0", backend="tensorrt") as m:
        y = m.infer({"x": x})["y"]
    close(y, ort_reference(bundle.root / "reference.onnx", x), "int8")


def test_fp8_engine_from_our_qdq_graph(trt_ready, tmp_path):
    """converters/fp8.py's E4M3 Q/DQ graph, built strongly typed: FP8 layers in the engine, and its outputs as close
    to the FP32 reference as the CPU accuracy gate measured the Q/DQ graph to be."""
    from xinfer_sdk.profiles import BUILDABLE_PRECISIONS

    if importlib.util.find_spec("xinfer_sdk.converters.fp8") is None or "fp8" not in BUILDABLE_PRECISIONS:
        pytest.skip("converters has no FP8 Q/DQ step (xinfer-sdk cannot produce fp8 graphs)")
    from gpu_models import compute_capability

    if compute_capability() < (8, 9):
        pytest.skip("FP8 needs compute capability 8.9 (Ada) or newer")
    model = mlp_onnx(tmp_path / "mlp.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(8).standard_normal((128, 256)).astype(np.float32))
    bundle = xs.build(model, "h100-sxm", "fp8", calib=calib, output=tmp_path / "f8.xinfer", max_batch_size=16,
                      thresholds={"min_top1_agreement": 0.0, "min_cosine": 0.9})
    step = {s.name: s for s in bundle.manifest.steps}["tensorrt"]
    assert step.status == "ok", step.message
    (lp,) = bundle.manifest.engine_layer_precisions().values()
    assert lp["verdict"] == "ok" and lp["share"].get("fp8", 0) > 0, lp
    x = np.random.default_rng(9).standard_normal((8, 256)).astype(np.float32)
    with xs.load(bundle.root, profile="h100-sxm", device="cuda:0", backend="tensorrt") as m:
        y = m.infer({"x": x})["y"]
    close(y, ort_reference(bundle.root / "reference.onnx", x), "fp8")


def test_nvml_metrics_under_load(trt_ready, tmp_path):
    pytest.importorskip("prometheus_client")
    from prometheus_client.core import GaugeMetricFamily

    from xinfer_sdk.server.metrics import GpuStats

    stats = GpuStats.open()
    if stats is None:
        pytest.skip("NVML is not available (nvidia-ml-py not installed, or no driver)")
    root = make_bundle(tmp_path / "load.xinfer", "fp16")
    x = np.random.default_rng(10).standard_normal((32, 256)).astype(np.float32)
    stop = threading.Event()
    samples: list[dict[str, float]] = []
    with xs.load(root, profile="a10", device="cuda:0", backend="tensorrt") as model:

        def load():
            while not stop.is_set():
                model.infer({"x": x})

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        try:
            for _ in range(6):
                time.sleep(0.5)
                families = {f.name: f for f in stats.collect(GaugeMetricFamily)}
                samples.append({name: s.value for name, f in families.items() for s in f.samples
                                if s.labels.get("gpu") in ("0", "nvml:0")})  # nvml:N when CUDA order is unknown
        finally:
            stop.set()
            worker.join(timeout=10)
    names = set().union(*samples)
    assert any("memory_used" in n for n in names) and any("utilization" in n for n in names), names
    assert max(v for s in samples for n, v in s.items() if "memory_used" in n) > 0
    assert max(v for s in samples for n, v in s.items() if "utilization" in n) > 0  # busy under load
    assert open_bundle(root).manifest.engine_plan  # the bundle is intact after the run
