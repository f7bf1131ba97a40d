"""KServe v2 HTTP endpoints (+ Triton's model-configuration, statistics and repository-index extensions).

    GET  /v2/health/live | /v2/health/ready                         (never need the API key)
    GET  /v2                                                        server metadata
    GET  /v2/models/<m>[/versions/<v>]                              model metadata
    GET  /v2/models/<m>[/versions/<v>]/ready                        200 ready, 503 not ready
    GET  /v2/models/<m>[/versions/<v>]/config                       Triton model configuration
    GET  /v2/models[/<m>[/versions/<v>]]/stats                      Triton statistics
    POST /v2/models/<m>[/versions/<v>]/infer                        inference (JSON or binary tensors)
    POST /v2/repository/index                                       models and their state (body {"ready": bool})
    POST /v2/repository/models/<m>/load | unload                    model control (optional {"parameters": {...}})
    GET  /v2/{system,cuda}sharedmemory[/region/<r>]/status          shared memory regions (shm_routes.py)
    POST /v2/{system,cuda}sharedmemory/region/<r>/register          ... register one
    POST /v2/{system,cuda}sharedmemory[/region/<r>]/unregister      ... unregister one or all
    GET  /metrics                                                   Prometheus text (never needs the API key)

Errors are KServe error JSON ``{"error": "..."}`` with the status of the ``XinferError`` (400, 401, 404,
429, 503, 504, ...); anything unexpected is logged with its traceback and answered 500 without it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from ..errors import InvalidInput, ModelNotFound, XinferError
from ..runtime import trace
from . import tracing
from .codec import decode_http_request, encode_http_response
from .extensions import ControlRoutes, with_extensions
from .http import Connection
from .http_wire import JSON, OCTET, Request, Slot, error_response, response
from .service import Served, Service
from .shm import registry

log = logging.getLogger(__name__)

_METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_WWW_AUTH = b"WWW-Authenticate: Bearer\r\n"
_HEALTH_OK = response(200, b"")
_NOT_READY = response(503, b"")
# model sub-resources and the method each takes
_MODEL_ACTIONS = {"": b"GET", "ready": b"GET", "config": b"GET", "stats": b"GET", "infer": b"POST"}


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


class Router:
    def __init__(self, service: Service, *, metrics: Callable[[], bytes] | None = None, ops_only: bool = False):
        self.service = service
        self.metrics = metrics
        self.ops_only = ops_only  # the metrics port: health and /metrics, nothing else
        # parsed infer routes: (method, path) -> (model name, version); the model is looked up per request, so a
        # model reloaded or unloaded through the repository is never answered from a stale cache
        self._routes: dict[tuple[bytes, str], tuple[str, str | None]] = {}
        self.shm = registry(service)
        self.control = ControlRoutes(service, self.shm)

    def close(self) -> None:
        """The server stops: unregister every shared memory region (the metrics port's router owns none)."""
        if not self.ops_only:
            self.shm.close()

    # -- dispatch ---------------------------------------------------------------------------------------
    def dispatch(self, conn: Connection, req: Request) -> None:
        try:
            self._dispatch(conn, req)
        except XinferError as exc:
            extra = _WWW_AUTH if exc.http_status == 401 else b""
            close = not req.keep_alive or self.service.draining
            conn._answer(error_response(exc.http_status, str(exc), close=close, extra=extra), close=close)
        except Exception:
            log.exception("HTTP %s %s failed", req.method.decode(), req.path)
            conn._answer(error_response(500, "internal server error (see the server log)", close=not req.keep_alive),
                         close=not req.keep_alive)

    def _dispatch(self, conn: Connection, req: Request) -> None:
        key = (req.method, req.path)
        hit = self._routes.get(key)
        if hit is not None:
            self.service.check_auth(req.headers.get(b"authorization"))
            self.infer(conn, req, self.service.get(*hit))
            return
        close = not req.keep_alive or self.service.draining
        path = req.path.rstrip("/") or "/"
        svc = self.service
        if path == "/v2/health/live":
            self._method(req, b"GET")
            conn._answer(response(200, b"", close=close), close)
            return
        if path == "/v2/health/ready":
            self._method(req, b"GET")
            conn._answer(response(200 if svc.ready else 503, b"", close=close), close)
            return
        if path == "/metrics" and self.metrics is not None:
            self._method(req, b"GET")
            body = self.metrics()
            conn._answer(response(200, body, ctype=_METRICS_TYPE, close=close), close)
            return
        if self.ops_only:
            raise ModelNotFound(f"{path}: the metrics port serves /metrics and /v2/health/* only; send KServe requests "
                           "to the HTTP port")
        svc.check_auth(req.headers.get(b"authorization"))
        if path == "/v2":
            self._method(req, b"GET")
            conn._answer(response(200, _dumps(with_extensions(svc.server_metadata())), close=close), close)
            return
        if path == "/v2/models/stats":
            self._method(req, b"GET")
            conn._answer(response(200, _dumps(svc.statistics()), close=close), close)
            return
        if path.startswith(("/v2/repository/", "/v2/systemsharedmemory", "/v2/cudasharedmemory")):
            self.control.dispatch(conn, req, path, close)
            return
        if not path.startswith("/v2/models/"):
            raise ModelNotFound(f"no such endpoint: {req.method.decode()} {req.path}")
        action, served, version = self._model_route(path)
        self._method(req, _MODEL_ACTIONS[action])
        if action == "infer":
            if len(self._routes) < 4096:
                self._routes[key] = (served.name, version)
            self.infer(conn, req, served)
            return
        if action == "":
            body = _dumps(served.metadata)
        elif action == "ready":
            ok = svc.model_ready(served.name)
            conn._answer(response(200 if ok else 503, _dumps({"name": served.name, "ready": ok}), close=close),
                         close)
            return
        elif action == "config":
            body = _dumps(served.config)
        else:
            body = _dumps(svc.statistics(served.name))
        conn._answer(response(200, body, close=close), close)

    @staticmethod
    def _method(req: Request, want: bytes) -> None:
        if req.method != want:
            raise _MethodNotAllowed(f"use {want.decode()} for {req.path} (got {req.method.decode()})")

    def _model_route(self, path: str) -> tuple[str, Served, str | None]:
        parts = [unquote(p) for p in path[len("/v2/models/"):].split("/")]
        name, rest = parts[0], parts[1:]
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        action = rest[0] if len(rest) == 1 else ("" if not rest else None)
        if action not in _MODEL_ACTIONS:
            raise ModelNotFound(f"no such endpoint: {path}")
        return action, self.service.get(name, version), version

    # -- inference ----------------------------------------------------------------------------------------
    def infer(self, conn: Connection, req: Request, served: Served) -> None:
        hl = req.headers.get(b"inference-header-content-length")
        header_len = None
        if hl is not None:
            try:
                header_len = int(hl)
            except ValueError:
                header_len = -1
            if header_len < 0:
                served.reject("InvalidInput")
                raise InvalidInput(f"Inference-Header-Content-Length must be a non-negative integer, got "
                                   f"{hl.decode('latin-1')!r}")
        tr = tracing.TRACER
        span = tr.begin(served.name, served.version, req.headers.get(b"traceparent"), "http") if tr is not None \
            else None
        nvtx = trace.NVTX
        if nvtx:
            trace.push("xinfer/decode")
        try:
            try:
                ir = decode_http_request(req.body, header_len, served.output_specs, self.shm)
            except InvalidInput:
                served.reject("InvalidInput")
                raise
            loop = asyncio.get_running_loop()
            fut, handle = self.service.submit(served, ir.inputs, ir.timeout, loop, held=len(conn.pending),
                                              params=ir.params)
        except BaseException as exc:
            if span is not None:
                tr.end(span, None, exc)
            raise
        finally:
            if nvtx:
                trace.pop()
        slot = conn.begin()
        slot.handle = handle
        slot.model = served.model
        fut.add_done_callback(functools.partial(self._done, conn, slot, served, ir, req.keep_alive, tr, span))

    def _done(self, conn: Connection, slot: Slot, served: Served, ir: Any, keep_alive: bool, tr: Any, span: Any,
              fut: asyncio.Future) -> None:
        handle, slot.handle = slot.handle, None
        if conn.closed or fut.cancelled():
            if span is not None:
                tr.end(span, handle, None if conn.closed else asyncio.CancelledError())
            return
        close = not keep_alive or self.service.draining
        exc = fut.exception()
        if exc is None:
            nvtx = trace.NVTX
            if nvtx:
                trace.push("xinfer/encode")
            try:
                body, head_len = encode_http_response(served.name, served.version, ir.id, fut.result(), ir.outputs)
            except XinferError as e:
                data, exc = error_response(e.http_status, str(e), close=close), e
            except Exception as e:
                log.exception("%s: encoding the response failed", served.name)
                data, exc = error_response(500, "internal server error (see the server log)", close=close), e
            else:
                if head_len is None:
                    data = response(200, body, close=close)
                else:
                    data = response(200, body, ctype=OCTET,
                                    extra=b"Inference-Header-Content-Length: %d\r\n" % head_len, close=close)
            finally:
                if nvtx:
                    trace.pop()
        elif isinstance(exc, XinferError):
            data = error_response(exc.http_status, str(exc), close=close)
        else:
            log.error("%s: inference failed: %r", served.name, exc)
            data = error_response(500, "internal server error (see the server log)", close=close)
        conn.finish(slot, data, close)
        if span is not None:
            tr.end(span, handle, exc)


class _MethodNotAllowed(XinferError):
    http_status = 405


__all__ = ["Router", "JSON"]
