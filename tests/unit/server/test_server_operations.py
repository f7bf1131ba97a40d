"""Backpressure, timeouts, drain and API keys through the real HTTP and gRPC front ends (gated test double)."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time

import numpy as np
import pytest
from server_doubles import make_model, x

GRPC_IMPLS = ["native", "grpcio"]


def post_infer(port, model="dbl", arr=None, headers=None, params=None, timeout=10):
    arr = x() if arr is None else arr
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(arr.shape), "data": arr.ravel().tolist()}]}
    if params:
        doc["parameters"] = params
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", f"/v2/models/{model}/infer", json.dumps(doc), headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, json.loads(body) if body else None, dict(r.getheaders())


def get(port, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def wait_until(cond, timeout=10.0):
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.mark.parametrize("grpc_impl", GRPC_IMPLS)
def test_full_queue_answers_429_at_once_and_grpc_resource_exhausted(serve, gate, grpc_impl):
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    gate.clear()
    model = make_model(gate=gate, max_batch_size=1, max_queue_size=2)
    srv = serve([model], grpc_impl=grpc_impl)
    results = []
    threads = [threading.Thread(target=lambda: results.append(post_infer(srv.port)[0])) for _ in range(3)]
    # one request runs (blocked on the gate), two fill the queue
    threads[0].start()
    wait_until(lambda: len(model.entered) == 1)  # running before the others queue (else one would be refused)
    for t in threads[1:]:
        t.start()
    wait_until(lambda: model.stats()["in_flight"] == 3)
    t0 = time.perf_counter()
    status, body, _ = post_infer(srv.port)
    assert status == 429 and "queue is full" in body["error"]
    assert time.perf_counter() - t0 < 1.0  # refused at once, not after a wait
    g = tg.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    inp = tg.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x())
    with pytest.raises(InferenceServerException) as ei:
        g.infer("dbl", [inp])
    assert "RESOURCE_EXHAUSTED" in str(ei.value.status())
    gate.set()
    for t in threads:
        t.join(10)
    assert results == [200, 200, 200]
    metrics = get(srv.port, "/metrics")[1].decode()
    assert 'xinfer_request_failure_total{model="dbl",reason="QueueFull",version="1"} 2.0' in metrics


@pytest.mark.parametrize("grpc_impl", GRPC_IMPLS)
def test_request_timeout_is_504_and_grpc_deadline_exceeded(serve, gate, grpc_impl):
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    gate.clear()
    model = make_model(gate=gate, max_batch_size=1)
    srv = serve([model], grpc_impl=grpc_impl)
    first = threading.Thread(target=post_infer, args=(srv.port,))
    first.start()
    wait_until(lambda: model.stats()["in_flight"] == 1)
    # queued behind the blocked batch with a 50 ms timeout (Triton's 'timeout' parameter, microseconds)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", post_infer(srv.port, params={"timeout": 50_000})))
    t.start()
    g = tg.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    inp = tg.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x())
    gbox = {}

    def grpc_call():
        try:
            g.infer("dbl", [inp], timeout=50_000)
        except InferenceServerException as exc:
            gbox["e"] = exc

    gt = threading.Thread(target=grpc_call)
    gt.start()
    time.sleep(0.3)
    gate.set()
    t.join(10)
    gt.join(10)
    first.join(10)
    status, body, _ = box["r"]
    assert status == 504 and "deadline" in body["error"]
    assert "DEADLINE_EXCEEDED" in str(gbox["e"].status())


def test_drain_answers_accepted_requests_then_refuses_new_ones(serve, gate):
    gate.clear()
    model = make_model(gate=gate, max_batch_size=2)
    srv = serve([model])
    results = []
    threads = [threading.Thread(target=lambda: results.append(post_infer(srv.port)[:2])) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: model.stats()["in_flight"] == 4)
    probe = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)  # a keep-alive client already connected
    probe.request("GET", "/v2/health/ready")
    first = probe.getresponse()
    first.read()
    assert first.status == 200
    srv.request_stop()
    wait_until(lambda: srv.service.draining)
    probe.request("GET", "/v2/health/ready")
    ready = probe.getresponse()
    ready.read()
    assert ready.status == 503 and ready.getheader("Connection") == "close"  # readiness false first
    # a new connection is still accepted (the kernel may have queued it already) and answered 503, never reset
    late = post_infer(srv.port)
    assert late[0] == 503 and "shutting down" in json.dumps(late[1])
    gate.set()
    for t in threads:
        t.join(10)
    assert [r[0] for r in results] == [200] * 4
    assert all(np.allclose(r[1]["outputs"][0]["data"], 2.0) for r in results)
    srv._thread.join(10)
    assert srv.drained_cleanly is True and srv._exit_code == 0


def test_drain_answers_a_request_on_an_open_connection_with_503(serve, gate):
    gate.clear()
    model = make_model(gate=gate, max_batch_size=2)
    srv = serve([model])
    busy = threading.Thread(target=lambda: post_infer(srv.port))
    busy.start()
    wait_until(lambda: model.stats()["in_flight"] == 1)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("GET", "/v2/health/live")
    conn.getresponse().read()
    srv.request_stop()
    wait_until(lambda: srv.service.draining)
    arr = x()
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(arr.shape), "data": arr.ravel().tolist()}]}
    conn.request("POST", "/v2/models/dbl/infer", json.dumps(doc))
    r = conn.getresponse()
    body = json.loads(r.read())
    assert r.status == 503 and "shutting down" in body["error"] and r.getheader("Connection") == "close"
    gate.set()
    busy.join(10)
    srv._thread.join(10)
    assert srv.drained_cleanly is True


@pytest.mark.parametrize("grpc_impl", GRPC_IMPLS)
def test_drain_answers_a_grpc_call_on_an_open_channel_with_unavailable(serve, gate, grpc_impl):
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    gate.clear()
    model = make_model(gate=gate, max_batch_size=2)
    srv = serve([model], grpc_impl=grpc_impl)
    g = tg.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    assert g.is_server_ready()  # the channel is open before the drain begins
    busy = threading.Thread(target=lambda: post_infer(srv.port))
    busy.start()
    wait_until(lambda: model.stats()["in_flight"] == 1)  # keeps the drain waiting
    srv.request_stop()
    wait_until(lambda: srv.service.draining)
    inp = tg.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x())
    with pytest.raises(InferenceServerException) as ei:
        g.infer("dbl", [inp])
    # the drain sent GOAWAY at once: the channel's next call is refused UNAVAILABLE (retryable elsewhere), either
    # by the closing server ("shutting down") or because the client reconnects and finds no listener
    assert "UNAVAILABLE" in str(ei.value.status())
    msg = ei.value.message()
    assert "shutting down" in msg or "Connection refused" in msg or "failed to connect" in msg, msg
    assert model.stats()["requests"]["success"] == 0  # never processed
    gate.set()
    busy.join(10)
    srv._thread.join(10)
    assert srv.drained_cleanly is True


@pytest.mark.parametrize("grpc_impl", GRPC_IMPLS)
def test_api_key_protects_everything_but_health_and_metrics(serve, monkeypatch, grpc_impl):
    import tritonclient.grpc as tg
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    srv = serve([make_model()], api_key="s3cret", grpc_impl=grpc_impl)
    for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
        assert get(srv.port, path)[0] == 200
    for path in ("/v2", "/v2/models/dbl", "/v2/models/dbl/config", "/v2/models/dbl/stats", "/v2/models/dbl/ready"):
        status, body = get(srv.port, path)
        assert status == 401 and "API key" in json.loads(body)["error"], path
        assert get(srv.port, path, {"Authorization": "Bearer wrong"})[0] == 401
        assert get(srv.port, path, {"Authorization": "Bearer s3cret"})[0] == 200
    assert post_infer(srv.port)[0] == 401
    assert post_infer(srv.port, headers={"Authorization": "Bearer s3cret"})[0] == 200
    c = th.InferenceServerClient(f"127.0.0.1:{srv.port}")
    with pytest.raises(InferenceServerException):
        c.get_model_metadata("dbl")
    assert c.get_model_metadata("dbl", headers={"Authorization": "Bearer s3cret"})["name"] == "dbl"
    g = tg.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    assert g.is_server_live()  # health needs no key
    with pytest.raises(InferenceServerException) as ei:
        g.get_model_metadata("dbl")
    assert "UNAUTHENTICATED" in str(ei.value.status())
    assert g.get_model_metadata("dbl", headers={"authorization": "Bearer s3cret"}).name == "dbl"
    inp = tg.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x())
    with pytest.raises(InferenceServerException) as ei:
        g.infer("dbl", [inp])
    assert "UNAUTHENTICATED" in str(ei.value.status())
    r = g.infer("dbl", [inp], headers={"authorization": "Bearer s3cret"})
    np.testing.assert_array_equal(r.as_numpy("y"), x() * 2)
    import queue

    got: queue.Queue = queue.Queue()
    g.start_stream(callback=lambda result, error: got.put((result, error)))
    try:
        g.async_stream_infer("dbl", [inp])
        result, error = got.get(timeout=10)
    finally:
        g.stop_stream()
    assert result is None and "API key" in str(error)


@pytest.mark.parametrize("grpc_impl", GRPC_IMPLS)
def test_grpc_client_deadline_withdraws_the_queued_request(serve, gate, grpc_impl):
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    gate.clear()
    model = make_model(gate=gate, max_batch_size=1)
    srv = serve([model], grpc_impl=grpc_impl)
    first = threading.Thread(target=post_infer, args=(srv.port,))
    first.start()
    wait_until(lambda: model.stats()["in_flight"] == 1)  # the worker is busy (gate closed)
    g = tg.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    inp = tg.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x())
    t0 = time.perf_counter()
    with pytest.raises(InferenceServerException) as ei:
        g.infer("dbl", [inp], client_timeout=0.3)  # gRPC deadline: the client cancels the call (RST_STREAM)
    assert "DEADLINE_EXCEEDED" in str(ei.value.status()) and time.perf_counter() - t0 < 5
    time.sleep(0.2)
    gate.set()
    first.join(10)
    assert post_infer(srv.port)[0] == 200
    wait_until(lambda: model.stats()["in_flight"] == 0)
    assert model.stats()["samples"] == 2  # the cancelled gRPC request never ran


def test_pipelined_requests_are_answered_in_order(serve):
    import socket

    srv = serve([make_model()])
    reqs = b""
    for i in range(5):
        body = json.dumps({"id": str(i), "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                                      "data": [i] * 4}]}).encode()
        reqs += (b"POST /v2/models/dbl/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(reqs)
    data = b""
    while data.count(b'"model_name"') < 5:
        chunk = s.recv(65536)
        assert chunk
        data += chunk
    s.close()
    ids = [json.loads(part.split(b"\r\n\r\n", 1)[1])["id"] for part in data.split(b"HTTP/1.1 ")[1:]]
    assert ids == ["0", "1", "2", "3", "4"]


def test_client_that_disconnects_does_not_hurt_the_server(serve, gate):
    import socket

    gate.clear()
    model = make_model(gate=gate, max_batch_size=1)
    srv = serve([model])
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}).encode()
    socks = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall((b"POST /v2/models/dbl/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)) + body)
        socks.append(s)
    wait_until(lambda: model.stats()["in_flight"] == 3)
    for s in socks:
        s.close()
    time.sleep(0.2)
    gate.set()
    assert post_infer(srv.port)[0] == 200
    wait_until(lambda: model.stats()["in_flight"] == 0)


def test_drain_delay_serves_on_with_readiness_false_then_refuses(serve, gate):
    model = make_model(gate=gate, max_batch_size=2)
    srv = serve([model], limits={"drain_delay": 1.0})
    srv.request_stop()
    wait_until(lambda: srv.service.unready)
    ready = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    ready.request("GET", "/v2/health/ready")
    assert ready.getresponse().status == 503  # load balancers see it at once ...
    assert post_infer(srv.port)[0] == 200  # ... while requests are still served normally
    gate.clear()
    held = threading.Thread(target=post_infer, args=(srv.port,))  # accepted during the delay: keeps the drain open
    held.start()
    wait_until(lambda: model.stats()["in_flight"] == 1)
    wait_until(lambda: srv.service.draining, timeout=5)
    assert post_infer(srv.port)[0] == 503  # then new work is refused
    gate.set()
    held.join(10)
    srv._thread.join(10)
    assert srv.drained_cleanly is True


def test_one_pipelining_connection_cannot_fill_the_queue_for_everyone(serve, gate):
    """Security probe row 16: one client filled the shared queue and others got 429. Once the queue is half full, a
    connection holding its share (1/16, at least 8) is refused; a connection with nothing waiting still gets in."""
    import socket

    from xinfer_sdk.server.service import fair_share

    gate.clear()
    model = make_model(gate=gate, max_batch_size=1, max_queue_size=64)
    srv = serve([model])
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}).encode()
    one = (b"POST /v2/models/dbl/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    flood = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    flood.sendall(one * 60)
    wait_until(lambda: model.stats()["requests"]["rejected"].get("queue_full", 0) > 0)
    other = threading.Thread(target=lambda: results.append(post_infer(srv.port)[0]))
    results = []
    other.start()
    wait_until(lambda: model.stats()["in_flight"] >= 33)
    gate.set()
    other.join(10)
    assert results == [200]  # the connection with nothing waiting was served
    data = b""
    while data.count(b"HTTP/1.1 ") < 60:
        chunk = flood.recv(1 << 16)
        assert chunk, "the flooding connection was closed before all its answers"
        data += chunk
    flood.close()
    statuses = [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]
    accepted = statuses.count(200)
    assert statuses.count(429) == 60 - accepted and 32 <= accepted <= 32 + fair_share(64)
