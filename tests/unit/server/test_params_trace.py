"""The request's trace context: the front ends open a span per inference request through ``tracing.TRACER`` (the
W3C ``traceparent`` header / metadata passed on) and close it once the answer is sent, with the batching core's
handle, or with the error when the request was refused. A recording tracer stands in for OpenTelemetry."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from server_doubles import make_model, x

tg = pytest.importorskip("tritonclient.grpc")

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Recorder:
    def __init__(self):
        self.begun, self.ended = [], []
        self.lock = threading.Lock()

    def begin(self, model, version, traceparent, protocol):
        with self.lock:
            self.begun.append((model, version, traceparent, protocol))
            return len(self.begun)

    def end(self, span, handle, error):
        with self.lock:
            self.ended.append((span, handle, error))


@pytest.fixture
def tracer(monkeypatch):
    from xinfer_sdk.server import tracing

    rec = Recorder()
    monkeypatch.setattr(tracing, "TRACER", rec)
    return rec


@pytest.fixture(scope="module", params=["native", "grpcio"])
def srv(request):
    from xinfer_sdk.server.runner import Server

    s = Server([make_model()], port=0, grpc_port=0, gpu_metrics=False, drain_timeout=5,
               grpc_impl=request.param).start_background()
    yield s
    s.stop()


def _http(srv, body, traceparent=TP):
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/v2/models/dbl/infer", json.dumps(body).encode(),
                                 method="POST", headers={"traceparent": traceparent})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def _ended(tracer, n=1):
    """The span is closed right after the answer is written, on the server's thread: wait for it briefly."""
    deadline = time.monotonic() + 5
    while len(tracer.ended) < n and time.monotonic() < deadline:
        time.sleep(0.005)
    return tracer.ended


GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


def test_http_request_is_traced_with_its_traceparent(srv, tracer):
    assert _http(srv, GOOD) == 200
    assert tracer.begun == [("dbl", "1", TP.encode(), "http")]
    (span, handle, error), = _ended(tracer)
    assert span == 1 and handle is not None and error is None


def test_http_refused_request_ends_its_span_with_the_error(srv, tracer):
    with pytest.raises(urllib.error.HTTPError):
        _http(srv, {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 5], "data": [1, 2, 3, 4, 5]}]})
    assert len(tracer.begun) == 1
    (_span, _handle, error), = _ended(tracer)
    assert error is not None and "x" in str(error)


def test_grpc_request_is_traced_with_its_traceparent(srv, tracer):
    c = tg.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    i = tg.InferInput("x", [1, 4], "FP32")
    i.set_data_from_numpy(x())
    c.infer("dbl", [i], headers={"traceparent": TP})
    model, version, tp, proto = tracer.begun[-1]
    assert (model, version, proto) == ("dbl", "1", "grpc")
    assert (tp.decode() if isinstance(tp, bytes) else tp) == TP
    (_span, handle, error), = _ended(tracer)
    assert handle is not None and error is None


def test_no_tracer_no_span(srv):
    from xinfer_sdk.server import tracing

    assert tracing.TRACER is None
    assert _http(srv, GOOD) == 200  # nothing to record, nothing breaks
