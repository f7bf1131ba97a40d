"""OpenTelemetry tracing of server requests (off by default; Triton's trace extension in OTel form).

The front ends (HTTP and gRPC) call exactly this, and do nothing more while tracing is off:

    tr = tracing.TRACER
    span = tr.begin(model, version, traceparent, "http") if tr is not None else None
    ...  # decode, submit, answer
    if span is not None:
        tr.end(span, handle, error)   # handle: the batching core's Request (t_enq, t_run, t_done stamps)

``TRACER`` is None unless ``configure()`` switched tracing on (OTLP export; ``pip install xinfer-sdk[otel]``).

What is exported, per sampled request: a SERVER span ``infer <model>`` from ``begin`` to ``end`` (attributes:
model, version, protocol; status ERROR with the exception when the request failed), and two children built
from the batching core's ``perf_counter`` stamps: ``queue`` (enqueue -> its batch started) and ``compute``
(batch started -> results). A W3C ``traceparent`` from the client (HTTP header or gRPC metadata) makes the
server span its child; the sampling decision follows the parent's flag when there is one (``ParentBased``),
else a new trace is sampled with probability ``rate``, drawn in ``begin`` before the SDK makes any object: a
request left out costs one ``random()`` (``begin`` returns None and the front end skips ``end``). A sampled
request costs about 70 us of CPU on the event loop thread (the OpenTelemetry Python SDK, three spans; measured
on the 2-core CI machine with a null exporter). Spans wait for export in a queue of ``QUEUE_SPANS``; past it the
SDK drops spans (and logs "Queue full"), never requests.
"""

from __future__ import annotations

import atexit
import logging
import random
import time
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: the OTLP/HTTP path a collector serves traces on (``http://collector:4318`` -> ``.../v1/traces``)
OTLP_TRACES_PATH = "/v1/traces"
DEFAULT_SERVICE = "xinfer-sdk"
#: spans buffered for export (3 per traced request: about 2 s of 1400 traced requests/s at the 1 s export period)
QUEUE_SPANS = 8192


class RequestTracer(Protocol):  # pragma: no cover - a structural type
    def begin(self, model: str, version: str, traceparent: bytes | str | None, protocol: str) -> Any: ...

    def end(self, span: Any, handle: Any, error: BaseException | None) -> None: ...


TRACER: RequestTracer | None = None


class _Open:
    """A sampled request in flight: its span and the (perf_counter, wall ns) pair that converts the core's stamps."""

    __slots__ = ("span", "perf", "wall_ns")

    def __init__(self, span: Any, perf: float, wall_ns: int):
        self.span, self.perf, self.wall_ns = span, perf, wall_ns

    def ns(self, t: float) -> int:
        return self.wall_ns + int((t - self.perf) * 1e9)


class OtelTracer:
    """``RequestTracer`` on an OpenTelemetry SDK tracer provider of its own (the global one is left alone)."""

    def __init__(self, provider: Any, trace_api: Any, propagator: Any, status: tuple[Any, Any], rate: float = 1.0):
        self.provider = provider
        self.rate = rate
        self.tracer = provider.get_tracer("xinfer_sdk.server")
        self._trace = trace_api
        self._prop = propagator
        self._Status, self._StatusCode = status
        self._server = trace_api.SpanKind.SERVER

    def begin(self, model: str, version: str, traceparent: bytes | str | None, protocol: str) -> _Open | None:
        ctx = None
        if traceparent:
            if isinstance(traceparent, (bytes, bytearray, memoryview)):
                traceparent = bytes(traceparent).decode("latin-1")
            ctx = self._prop.extract({"traceparent": traceparent.strip()})  # malformed: a new root, as the spec says
        if not ctx and self.rate < 1.0 and random.random() >= self.rate:
            return None  # a new trace left out by the rate: decided before the SDK makes any object (~0.3 us)
        wall, perf = time.time_ns(), time.perf_counter()
        span = self.tracer.start_span(f"infer {model}", context=ctx, kind=self._server, start_time=wall,
                                      attributes={"xinfer.model": model, "xinfer.model_version": version or "",
                                                  "xinfer.protocol": protocol})
        if not span.is_recording():
            return None
        return _Open(span, perf, wall)

    def end(self, span: _Open, handle: Any, error: BaseException | None) -> None:
        parent = span.span
        t_enq = getattr(handle, "t_enq", None)
        t_run = getattr(handle, "t_run", None)
        t_done = getattr(handle, "t_done", None)
        ctx = self._trace.set_span_in_context(parent)
        if t_enq and t_run:  # 0.0: the request never ran (refused, cancelled while queued)
            self.tracer.start_span("queue", context=ctx, start_time=span.ns(t_enq)).end(end_time=span.ns(t_run))
        if t_run and t_done:
            self.tracer.start_span("compute", context=ctx, start_time=span.ns(t_run)).end(end_time=span.ns(t_done))
        if error is not None:
            parent.set_status(self._Status(self._StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            parent.record_exception(error)
        parent.end()

    def shutdown(self) -> None:
        """Export what is buffered and stop (the server's drain calls it; also at interpreter exit)."""
        self.provider.shutdown()


def traces_url(endpoint: str) -> str:
    """An OTLP/HTTP endpoint as given (``http://host:4318`` or the full ``.../v1/traces``) -> the traces URL."""
    from ..errors import UserError

    url = endpoint.strip()
    if "://" not in url:
        raise UserError(f"--trace-otlp {endpoint!r}: expected an http(s) URL such as http://127.0.0.1:4318 "
                        "(an OpenTelemetry collector's OTLP/HTTP port)")
    if not url.split("://", 1)[1].split("?", 1)[0].rstrip("/").endswith(OTLP_TRACES_PATH):
        url = url.rstrip("/") + OTLP_TRACES_PATH
    return url


def configure(endpoint: str | None, rate: float = 1.0, service_name: str = DEFAULT_SERVICE, *,
              exporter: Any = None) -> RequestTracer | None:
    """Switch request tracing on (OTLP/HTTP export to ``endpoint``, ``rate`` of new traces sampled), or off
    with ``endpoint=None``. Installs and returns ``TRACER``. ``exporter``: any OpenTelemetry SpanExporter
    instead of OTLP/HTTP (the endpoint is then only a label)."""
    global TRACER
    from ..errors import MissingDependency, UserError

    if TRACER is not None:
        shutdown()
    if endpoint is None and exporter is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise UserError(f"--trace-rate {rate!r}: expected a fraction of requests between 0 and 1 (e.g. 0.01)")
    try:
        from opentelemetry import trace as trace_api
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
        from opentelemetry.trace import Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError as exc:
        raise MissingDependency("opentelemetry-sdk", "otel", purpose="request tracing (--trace-otlp)",
                                cause=str(exc)) from None
    if exporter is None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise MissingDependency("opentelemetry-exporter-otlp-proto-http", "otel",
                                    purpose="OTLP/HTTP export of traces (--trace-otlp)", cause=str(exc)) from None
        exporter = OTLPSpanExporter(endpoint=traces_url(endpoint))
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                              sampler=ParentBased(ALWAYS_ON))  # new traces: ``rate`` is applied in begin()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000, max_queue_size=QUEUE_SPANS))
    TRACER = OtelTracer(provider, trace_api, TraceContextTextMapPropagator(), (Status, StatusCode), float(rate))
    log.info("%-28s | OpenTelemetry tracing on: OTLP/HTTP %s, rate %g, service %s", "tracing",
             traces_url(endpoint) if endpoint else type(exporter).__name__, rate, service_name)
    return TRACER


def shutdown() -> None:
    """Flush and switch tracing off (no-op when it is off)."""
    global TRACER
    tracer, TRACER = TRACER, None
    if tracer is not None and hasattr(tracer, "shutdown"):
        try:
            tracer.shutdown()
        except Exception as exc:  # an unreachable collector must not fail the server's exit
            log.warning("tracing: flushing the last spans failed: %s", exc)


atexit.register(shutdown)

__all__ = ["TRACER", "OtelTracer", "RequestTracer", "configure", "shutdown", "traces_url"]
