"""GPU checks that need only the driver, cuda-python and NVML (no TensorRT, no onnxruntime-gpu).

The lent GPU machine's image has CUDA 13 with cuda-bindings, nvidia-ml-py and a CUDA torch but no TensorRT
or onnxruntime-gpu, and it cannot download them: these are the checks of our own GPU code that can run there
as it is (bench/gpu_check.sh runs them with the rest of `pytest -m gpu`). Never run on a GPU yet.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def test_cudart_pinned_and_device_buffers_round_trip_on_one_stream():
    """Our cuda-python layer (the TensorRT backend's data path): pinned host -> device -> pinned host, async on
    one stream, bytes unchanged; the stream handle is the native one (review D7), not a wrapper address."""
    from xinfer_sdk.accel.nvidia import _cudart

    cudart = _cudart.load()
    count, why = _cudart.device_status(cudart)
    assert count >= 1, why
    props = _cudart.device_properties(cudart, 0)
    assert props["name"] and props["total_memory"] > 0 and "." in props["compute_capability"]
    data = np.random.default_rng(0).integers(0, 255, size=3 << 20, dtype=np.uint8)  # 3 MiB
    src, dst, dev, stream = (_cudart.PinnedBuffer(cudart), _cudart.PinnedBuffer(cudart), _cudart.DeviceBuffer(cudart),
                             _cudart.Stream(cudart))
    try:
        src.ensure(data.nbytes)[:data.nbytes] = data
        dst.ensure(data.nbytes)[:] = 0
        dptr = dev.ensure(data.nbytes)
        stream.htod(dptr, src.ptr, data.nbytes)
        stream.dtoh(dst.ptr, dptr, data.nbytes)
        stream.synchronize()
        assert np.array_equal(dst.view[:data.nbytes], data)
        assert stream.handle != 0 and stream.handle == _cudart.handle(stream.stream)
    finally:
        for b in (src, dst, dev):
            b.free()
        stream.destroy()


def test_detect_maps_this_gpu_by_its_exact_nvml_name():
    """Review D1/D13 on real NVML: the GPU's own name maps to the profile that lists it (or to none), never a
    prefix relative (an A100 40GB is not an a10), and it records which GPU index matched."""
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    from xinfer_sdk.profiles import ProfileRegistry
    from xinfer_sdk.profiles.detect import detect

    pynvml.nvmlInit()
    try:
        raw = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
    finally:
        pynvml.nvmlShutdown()
    name = raw.decode() if isinstance(raw, bytes) else str(raw)
    reg = ProfileRegistry()
    det = detect(reg, use_env=False)
    listing = [p for p in reg.load_all()[0] if name in p.match.nvml_names]
    if listing:
        assert det.source == "nvml" and det.profile == listing[0].name, (name, det)
        assert det.gpu_index is not None and name in det.reason, det.reason
    else:
        assert det.source != "nvml", f"{name!r} is listed by no profile but detect chose {det.profile}"


def test_nvml_metrics_move_under_gpu_load():
    """server/metrics.py's NVML collector on a real driver: memory and utilisation read, labelled with the CUDA
    index, and utilisation rises while the GPU works (load from torch, which the lent image has)."""
    pytest.importorskip("prometheus_client")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this torch has no CUDA (a CPU build): no GPU load to measure")
    from prometheus_client.core import GaugeMetricFamily

    from xinfer_sdk.server.metrics import GpuStats

    stats = GpuStats.open()
    if stats is None:
        pytest.skip("NVML is not available (nvidia-ml-py not installed, or no driver)")
    a = torch.randn(4096, 4096, device="cuda:0")
    stop = threading.Event()

    def load():
        while not stop.is_set():
            (a @ a).sum().item()

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    samples: list[dict[str, float]] = []
    try:
        for _ in range(6):
            time.sleep(0.5)
            samples.append({f.name: s.value for f in stats.collect(GaugeMetricFamily) for s in f.samples
                            if s.labels.get("gpu") in ("0", "nvml:0")})
    finally:
        stop.set()
        worker.join(timeout=10)
    names = set().union(*samples)
    assert any("memory_used" in n for n in names) and any("utilization" in n for n in names), names
    assert max(v for s in samples for n, v in s.items() if "memory_used" in n) > 0
    assert max(v for s in samples for n, v in s.items() if "utilization" in n) > 0
