"""OpenTelemetry tracing of server requests (off by default; Triton's trace extension in OTel form).

The front ends (HTTP and gRPC) call exactly this, and do nothing more while tracing is off:

    tr = tracing.TRACER
    span = tr.begin(model, version, traceparent, "http") if tr is not None else None
    ...  # decode, submit, answer
    if span is not None:
        tr.end(span, handle, error)   # handle: the batching core's Request (t_enq, t_run, t_done stamps)

``TRACER`` is None unless ``configure()`` switched tracing on (OTLP export; ``pip install xinfer-sdk[otel]``).
"""

from __future__ import annotations

from typing import Any, Protocol


class RequestTracer(Protocol):  # pragma: no cover - a structural type
    def begin(self, model: str, version: str, traceparent: bytes | str | None, protocol: str) -> Any: ...

    def end(self, span: Any, handle: Any, error: BaseException | None) -> None: ...


TRACER: RequestTracer | None = None

__all__ = ["TRACER", "RequestTracer"]
