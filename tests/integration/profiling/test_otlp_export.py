"""OpenTelemetry request spans reach a real OTLP/HTTP receiver (decoded with opentelemetry-proto)."""

from __future__ import annotations

import types

import pytest

pytest.importorskip("opentelemetry.sdk.trace", reason="needs the [otel] extra (opentelemetry-sdk)")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="needs opentelemetry-exporter-otlp-proto-http")
pytest.importorskip("opentelemetry.proto", reason="needs opentelemetry-proto for the test receiver")

from otlp_receiver import OtlpReceiver  # noqa: E402

from xinfer_sdk.server import tracing  # noqa: E402

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def receiver():
    with OtlpReceiver() as rx:
        yield rx
    tracing.shutdown()


def _handle(t0: float) -> types.SimpleNamespace:
    # the batching core's Request carries these perf_counter stamps; only the attributes are read
    return types.SimpleNamespace(t_enq=t0, t_run=t0 + 0.002, t_done=t0 + 0.005)


def _export(tr, traceparent=None, error=None):
    import time

    span = tr.begin("mlp", "1", traceparent, "http")
    t0 = time.perf_counter()
    if span is not None:
        tr.end(span, _handle(t0), error)
    return span


def test_spans_arrive_with_the_client_traceparent_as_parent(receiver):
    tr = tracing.configure(receiver.url, rate=1.0, service_name="xinfer-test")
    _export(tr, f"00-{TRACE_ID}-{PARENT_ID}-01".encode())
    tracing.shutdown()  # flushes
    spans = {s.name: (res, s) for res, s in receiver.wait(3)}
    assert receiver.posts and all(p == "/v1/traces" for p in receiver.posts)
    res, root = spans["infer mlp"]
    assert res["service.name"] == "xinfer-test"
    assert root.trace_id.hex() == TRACE_ID and root.parent_span_id.hex() == PARENT_ID
    assert root.kind == 2  # SPAN_KIND_SERVER


def test_queue_and_compute_are_children_built_from_the_core_stamps(receiver):
    tr = tracing.configure(receiver.url, rate=1.0)
    _export(tr)
    tracing.shutdown()
    spans = {s.name: s for _, s in receiver.wait(3)}
    root, queue, compute = spans["infer mlp"], spans["queue"], spans["compute"]
    assert queue.parent_span_id == root.span_id and compute.parent_span_id == root.span_id
    assert queue.end_time_unix_nano - queue.start_time_unix_nano == pytest.approx(2_000_000, abs=2_000)
    assert compute.start_time_unix_nano == queue.end_time_unix_nano
    assert compute.end_time_unix_nano - compute.start_time_unix_nano == pytest.approx(3_000_000, abs=2_000)


def test_a_failed_request_is_exported_with_error_status(receiver):
    tr = tracing.configure(receiver.url, rate=1.0)
    _export(tr, error=ValueError("input 'x' has shape [3]"))
    tracing.shutdown()
    root = {s.name: s for _, s in receiver.wait(3)}["infer mlp"]
    assert root.status.code == 2  # STATUS_CODE_ERROR
    assert "input 'x'" in root.status.message


def test_rate_zero_samples_no_new_trace_but_a_sampled_parent_is_followed(receiver):
    tr = tracing.configure(receiver.url, rate=0.0)
    assert _export(tr) is None  # not sampled: begin says so, nothing to end
    _export(tr, f"00-{TRACE_ID}-{PARENT_ID}-01")
    tracing.shutdown()
    names = [s.name for _, s in receiver.wait(3)]
    assert names.count("infer mlp") == 1
    assert all(s.trace_id.hex() == TRACE_ID for _, s in receiver.spans)


def test_configure_none_switches_tracing_off(receiver):
    tracing.configure(receiver.url, rate=1.0)
    assert tracing.TRACER is not None
    assert tracing.configure(None) is None and tracing.TRACER is None


@pytest.mark.parametrize("rate", [-0.1, 1.5, "all"])
def test_a_bad_rate_is_refused_with_the_flag_named(rate):
    from xinfer_sdk.errors import UserError

    with pytest.raises(UserError, match="--trace-rate"):
        tracing.configure("http://127.0.0.1:4318", rate=rate)
    assert tracing.TRACER is None
