"""Through the real HTTP server and ONNX Runtime: a fatal engine error (ORT's "CUDA failure 700" text, injected from
inside the session's run by the 'fault-ort' test backend) answers its batch with a 500 naming it, the worker is
replaced, readiness goes 503 while no worker runs and 200 again after, a request queued meanwhile gets its 200, and
/metrics counts the restart."""

from __future__ import annotations

import http.client
import json
import threading
import time

import numpy as np
import pytest
from fault_backend import ERROR, FATAL, FAULTS

from xinfer_sdk.runtime import supervisor
from xinfer_sdk.runtime.backends import select

BOUND = 10.0


def call(port, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND)
    try:
        c.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def infer(port, first):
    x = np.arange(8, dtype=np.float32).reshape(1, 8)
    x[0, 0] = first
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8],
                                   "data": x.ravel().tolist()}]}).encode()
    return call(port, "POST", "/v2/models/fault/infer", body)


def until_status(port, path, status):
    end = time.perf_counter() + BOUND
    while True:
        got = call(port, "GET", path)[0]
        if got == status:
            return
        if time.perf_counter() > end:
            raise AssertionError(f"{path}: still {got}, expected {status} within {BOUND}s")
        time.sleep(0.01)


@pytest.fixture
def server(model_files, monkeypatch):
    import xinfer_sdk as xs
    from xinfer_sdk.server.runner import Server

    monkeypatch.setitem(select.REGISTRY, "fault-ort", ("fault_backend:FaultOrtBackend", ""))
    monkeypatch.setattr(supervisor, "RESTART_BACKOFF_S", 0.01)
    FAULTS.reset()
    FAULTS.hold_starts = threading.Event()
    FAULTS.free_starts = 1  # the model's own start; the replacement waits for the test
    model = xs.load(model_files["mlp"], profile="cpu", backend="fault-ort", name="fault", threads=1,
                    batching={"max_batch_delay": "0ms", "max_batch_size": 8}, warmup=False)
    srv = Server([model], port=0, grpc_port=None, gpu_metrics=False, drain_timeout=5).start_background()
    yield srv
    FAULTS.hold_starts.set()
    srv.stop()
    FAULTS.reset()


def test_fatal_engine_error_500_then_not_ready_then_recovered_and_counted(server, model_files):
    port = server.port
    status, body = infer(port, 1.0)
    assert status == 200, body
    status, body = infer(port, FATAL)
    assert status == 500
    err = json.loads(body)["error"]
    assert "CUDA failure 700: an illegal memory access was encountered" in err and "unrecoverable" in err
    until_status(port, "/v2/health/ready", 503)
    assert call(port, "GET", "/v2/models/fault/ready")[0] == 503
    queued = {}
    t = threading.Thread(target=lambda: queued.setdefault("r", infer(port, 2.0)))
    t.start()  # waits in the queue for the replacement: not failed
    model = server.service.get("fault").model
    end = time.perf_counter() + BOUND
    while model.stats()["queue_depth"] != 1:
        assert time.perf_counter() < end, "the request never reached the queue"
        time.sleep(0.01)
    assert t.is_alive()
    FAULTS.hold_starts.set()
    t.join(BOUND)
    assert queued["r"][0] == 200, queued["r"]
    out = np.asarray(json.loads(queued["r"][1])["outputs"][0]["data"], dtype=np.float32)
    x = np.arange(8, dtype=np.float32).reshape(1, 8)
    x[0, 0] = 2.0
    np.testing.assert_allclose(out, model_files["mlp_ref"](x).ravel(), rtol=1e-4, atol=1e-4)
    until_status(port, "/v2/health/ready", 200)
    assert call(port, "GET", "/v2/models/fault/ready")[0] == 200
    metrics = call(port, "GET", "/metrics")[1].decode()
    assert 'xinfer_worker_restarts_total{model="fault",version="1"} 1.0' in metrics
    assert 'xinfer_workers_healthy{model="fault",version="1"} 1.0' in metrics
    assert 'xinfer_request_failure_total{model="fault",reason="EngineFatal",version="1"} 1.0' in metrics
    assert infer(port, 3.0)[0] == 200


def test_engine_error_fails_only_its_batch_and_the_worker_stays(server):
    port = server.port
    FAULTS.hold_starts.set()
    statuses = [infer(port, v) for v in (1.0, ERROR, 2.0, ERROR, 3.0)]
    assert [s for s, _ in statuses] == [200, 500, 200, 500, 200]
    err = json.loads(statuses[1][1])["error"]
    assert "inference failed in backend 'fault-ort'" in err and "engine exploded" in err
    assert call(port, "GET", "/v2/health/ready")[0] == 200
    metrics = call(port, "GET", "/metrics")[1].decode()
    assert 'xinfer_worker_restarts_total{model="fault",version="1"} 0.0' in metrics
    assert FAULTS.activations == 1
