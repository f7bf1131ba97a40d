"""A new version goes live while HTTP clients hammer the server: not one request fails (issue 14, item 2).

A real server (ONNX Runtime) serves a model repository with ``--model-control poll``; three keep-alive HTTP
clients and one gRPC client (tritonclient) send requests without pause; version 2 is moved into the repository; the poll loads and warms it
beside version 1, switches, and drains version 1. Every answer must be 200, and the answers must come from
version 2 afterwards.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time

import numpy as np
from onnx_models import make_mlp_onnx

X = np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)
BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8],
                               "data": X.ravel().tolist()}]}).encode()


def _reference(path) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": X})[0]


def _start(repo, mode, grpc=False, **kw):
    from xinfer_sdk.server.config import build_control, read_serve_config
    from xinfer_sdk.server.runner import Server

    control = build_control(read_serve_config(None, [str(repo)]), mode=mode, profile="cpu", threads=1, **kw)
    models, seconds = control.initial()
    srv = Server(models, port=0, grpc_port=0 if grpc else None, gpu_metrics=False, drain_timeout=10,
                 load_seconds=seconds,
                 control=control)
    return srv.start_background()


def _hammer(port, stop, results, outputs):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        while not stop.is_set():
            try:
                conn.request("POST", "/v2/models/mlp/infer", BODY, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:  # a reset or a dropped request: a failure
                results.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            results.append(resp.status)
            if resp.status == 200:
                outputs.append(np.array(json.loads(data)["outputs"][0]["data"], dtype=np.float32))
            else:
                results.append(data[:200])
    finally:
        conn.close()


def _hammer_grpc(port, stop, results, outputs):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    inp = grpcclient.InferInput("input", [1, 8], "FP32")
    inp.set_data_from_numpy(X)
    try:
        while not stop.is_set():
            try:
                out = client.infer("mlp", [inp]).as_numpy("output")
            except Exception as exc:  # InferenceServerException: any refused or lost call is a failure
                results.append(f"gRPC {exc}")
                continue
            results.append(200)
            outputs.append(out.ravel())
    finally:
        client.close()


def test_poll_version_swap_under_load_fails_nothing(tmp_path):
    repo = tmp_path / "repo"
    v1 = make_mlp_onnx_path(repo / "mlp" / "1", seed=0)
    staged = make_mlp_onnx_path(tmp_path / "staging" / "2", seed=1)
    ref1, ref2 = _reference(v1), _reference(staged)
    assert not np.allclose(ref1, ref2)
    srv = _start(repo, "poll", grpc=True, poll_interval=0.2)
    stop, results, outputs = threading.Event(), [], []
    clients = [threading.Thread(target=_hammer, args=(srv.port, stop, results, outputs)) for _ in range(3)]
    clients.append(threading.Thread(target=_hammer_grpc, args=(srv.grpc_port, stop, results, outputs)))
    try:
        for t in clients:
            t.start()
        time.sleep(1.0)
        before = len(results)
        os.rename(staged.parent, repo / "mlp" / "2")  # a whole version appears at once
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            idx = srv.service.repository_index()
            if [(e["version"], e["state"]) for e in idx] == [("2", "READY")]:
                break
            time.sleep(0.05)
        swapped_at = len(outputs)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in clients:
            t.join(30)
        code = srv.stop()
    failures = [r for r in results if r != 200]
    assert before > 0 and len(results) > before
    assert failures == [], f"{len(failures)} of {len(results)} requests failed during the reload: {failures[:6]}"
    assert [(e["version"], e["state"]) for e in idx] == [("2", "READY")], idx
    assert np.allclose(outputs[0], ref1.ravel(), atol=1e-5)
    assert len(outputs) > swapped_at and np.allclose(outputs[-1], ref2.ravel(), atol=1e-5)
    assert code == 0


def test_unload_answers_what_was_accepted_then_404(tmp_path):
    """Explicit mode: unload drains (every accepted request answered 200), then the model is unknown (404)."""
    import asyncio

    repo = tmp_path / "repo"
    make_mlp_onnx_path(repo / "mlp", seed=0)
    srv = _start(repo, "explicit", load_names=["mlp"])
    stop, results, outputs = threading.Event(), [], []
    clients = [threading.Thread(target=_hammer, args=(srv.port, stop, results, outputs)) for _ in range(2)]
    try:
        for t in clients:
            t.start()
        time.sleep(0.5)
        asyncio.run_coroutine_threadsafe(srv.service.unload_model("mlp"), srv.loop).result(30)
        time.sleep(0.3)
        stop.set()
        for t in clients:
            t.join(30)
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("POST", "/v2/models/mlp/infer", BODY, {"Content-Type": "application/json"})
        after = conn.getresponse()
        after_body = after.read()
        conn.close()
    finally:
        stop.set()
        srv.stop()
    statuses = {r for r in results if isinstance(r, int)}
    others = [r for r in results if not isinstance(r, (int, bytes))]
    assert others == [] and statuses <= {200, 404}, (statuses, others[:4])
    assert results.count(200) > 0
    assert after.status == 404 and b"mlp" in after_body


def make_mlp_onnx_path(folder, seed):
    folder.mkdir(parents=True)
    make_mlp_onnx(folder / "model.onnx", seed=seed)
    return folder / "model.onnx"
