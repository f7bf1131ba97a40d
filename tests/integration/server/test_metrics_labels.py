"""/metrics labels every series by model AND version, and says which device served what (issue 14, items 2-3)."""

from __future__ import annotations

import urllib.request

import numpy as np
from onnx_models import make_mlp_onnx

from xinfer_sdk.server.config import build_control, read_serve_config
from xinfer_sdk.server.runner import Server


def _scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def test_metrics_have_version_and_device_labels(tmp_path):
    for v in (1, 3):
        (tmp_path / "mlp" / str(v)).mkdir(parents=True)
        make_mlp_onnx(tmp_path / "mlp" / str(v) / "model.onnx", seed=v)
    (tmp_path / "mlp" / "config.yaml").write_text("version_policy: all\n")
    control = build_control(read_serve_config(None, [str(tmp_path)]), profile="cpu", threads=1)
    models, seconds = control.initial()
    srv = Server(models, port=0, grpc_port=None, gpu_metrics=False, load_seconds=seconds, control=control)
    srv.start_background()
    try:
        for _ in range(3):
            srv.service.get("mlp", "3").model.infer({"input": np.ones((2, 8), np.float32)})
        text = _scrape(srv.port)
        stats = srv.service.statistics("mlp", "3")["model_stats"][0]
    finally:
        srv.stop()
    assert 'xinfer_request_success_total{model="mlp",version="3"} 3.0' in text
    assert 'xinfer_request_success_total{model="mlp",version="1"} 0.0' in text
    assert 'xinfer_device_inference_samples_total{device="cpu",model="mlp",version="3"} 6.0' in text
    assert 'xinfer_device_batches_total{device="cpu",model="mlp",version="1"} 0.0' in text
    assert stats["devices"]["cpu"]["inferences"] == 6


def test_a_model_on_two_devices_has_one_series_per_device(tmp_path):
    (tmp_path / "mlp").mkdir()
    make_mlp_onnx(tmp_path / "mlp" / "model.onnx")
    control = build_control(read_serve_config(None, [str(tmp_path)]), profile="cpu", threads=1, device="cpu:0,cpu:1")
    models, seconds = control.initial()
    srv = Server(models, port=0, grpc_port=None, gpu_metrics=False, load_seconds=seconds, control=control)
    srv.start_background()
    try:
        model = srv.service.get("mlp").model
        futs = [model.submit({"input": np.ones((1, 8), np.float32)}) for _ in range(40)]
        for f in futs:
            f.result(10)
        text = _scrape(srv.port)
        devices = srv.service.statistics("mlp")["model_stats"][0]["devices"]
    finally:
        srv.stop()
    assert sorted(devices) == ["cpu:0", "cpu:1"]
    assert sum(d["inferences"] for d in devices.values()) == 40
    for dev in ("cpu:0", "cpu:1"):
        assert f'device="{dev}"' in text
