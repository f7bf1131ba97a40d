"""A real server traces requests over HTTP and gRPC: W3C traceparent in, OTLP/HTTP spans out to a real receiver."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("opentelemetry.sdk.trace", reason="needs the [otel] extra (opentelemetry-sdk)")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="needs opentelemetry-exporter-otlp-proto-http")
pytest.importorskip("opentelemetry.proto", reason="needs opentelemetry-proto for the test receiver")

from onnx_models import make_mlp_onnx  # noqa: E402
from otlp_receiver import OtlpReceiver  # noqa: E402

from xinfer_sdk.server import tracing  # noqa: E402

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_HTTP = "b7ad6b7169203331"
PARENT_GRPC = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    import xinfer_sdk as xs
    from xinfer_sdk.server.runner import Server

    path = tmp_path_factory.mktemp("otel") / "mlp.onnx"
    make_mlp_onnx(path)
    with OtlpReceiver() as rx:
        tracing.configure(rx.url, rate=1.0, service_name="xinfer-e2e")
        model = xs.load(path, profile="cpu", name="mlp", threads=1, batching={"max_batch_delay": "0ms"})
        srv = Server([model], port=0, grpc_port=0, gpu_metrics=False, drain_timeout=5).start_background()
        try:
            yield srv, rx
        finally:
            srv.stop()
            tracing.shutdown()


def _http_infer(srv, traceparent: str) -> None:
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/v2/models/mlp/infer", data=body,
                                 headers={"Content-Type": "application/json", "traceparent": traceparent})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def _spans_under(rx, parent_hex: str, n: int = 3):
    tracing.TRACER.provider.force_flush()
    for _ in range(3):
        spans = [s for _, s in rx.wait(n)]
        roots = [s for s in spans if s.parent_span_id.hex() == parent_hex]
        if roots:
            root = roots[0]
            return root, {s.name: s for s in spans if s.parent_span_id == root.span_id}
    pytest.fail(f"no span with parent {parent_hex} arrived; got {[s.name for _, s in rx.spans]}")


def test_http_request_span_joins_the_callers_trace_with_queue_and_compute(traced):
    srv, rx = traced
    _http_infer(srv, f"00-{TRACE_ID}-{PARENT_HTTP}-01")
    root, children = _spans_under(rx, PARENT_HTTP)
    assert root.name == "infer mlp" and root.trace_id.hex() == TRACE_ID
    assert {"queue", "compute"} <= set(children)
    assert root.start_time_unix_nano <= children["queue"].start_time_unix_nano
    assert children["compute"].end_time_unix_nano <= root.end_time_unix_nano


def test_grpc_request_span_joins_the_callers_trace(traced):
    grpcclient = pytest.importorskip("tritonclient.grpc")
    srv, rx = traced
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    inp = grpcclient.InferInput("input", [1, 8], "FP32")
    inp.set_data_from_numpy(np.full((1, 8), 0.5, np.float32))
    client.infer("mlp", [inp], headers={"traceparent": f"00-{TRACE_ID}-{PARENT_GRPC}-01"})
    client.close()
    root, children = _spans_under(rx, PARENT_GRPC)
    assert root.name == "infer mlp" and root.trace_id.hex() == TRACE_ID
    attrs = {a.key: a.value.string_value for a in root.attributes}
    assert attrs["xinfer.protocol"] == "grpc"
    assert {"queue", "compute"} <= set(children)
