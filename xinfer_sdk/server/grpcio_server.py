"""The grpc.aio transport (gRPC C-core) of the KServe v2 gRPC service: ``--grpc-impl grpcio``, the fallback to the
native transport (``h2grpc/``). Both call the same RPCs (``KServeRpcs`` in grpc_server.py); this module only moves
messages between grpc.aio and them, maps the network limits grpcio offers, and drains."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from .._lazy import require
from ..errors import XinferError
from . import tracing
from .grpc_server import CONTROL, SERVICE, UNARY, UNSUPPORTED, KServeRpcs, grpc_status, unsupported_message
from .service import Service

log = logging.getLogger(__name__)


class InferenceServicer:
    """grpc.aio handlers (coroutines on the server's loop) around ``KServeRpcs``."""

    def __init__(self, service: Service):
        self.rpcs = KServeRpcs(service)
        self.svc = service
        self.pb = self.rpcs.pb
        grpc = require("grpc", purpose="the gRPC endpoint")
        self.codes = {c.value[0]: c for c in grpc.StatusCode}

    def _fail(self, context: Any, exc: BaseException, empty: Any) -> Any:
        code, msg = grpc_status(exc)
        context.set_code(self.codes[code])
        context.set_details(msg)
        return empty

    def _auth(self, context: Any) -> None:
        if self.svc.auth_required:
            value = None
            for k, v in context.invocation_metadata() or ():
                if k == "authorization":
                    value = v
            self.svc.check_auth(value)

    def unary(self, rpc: str, response: Any, auth: bool, awaited: bool = False):
        fn = self.rpcs.handler(rpc)

        async def handler(request: Any, context: Any) -> Any:
            try:
                if auth:
                    self._auth(context)
                return (await fn(request)) if awaited else fn(request)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                return self._fail(context, exc, response())

        return handler

    @staticmethod
    def _traceparent(context: Any) -> str | None:
        for k, v in context.invocation_metadata() or ():
            if k == "traceparent":
                return v
        return None

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        want = handle = None
        try:
            self._auth(context)
            tp = self._traceparent(context) if tracing.TRACER is not None else None
            served, fut, handle, want = self.rpcs.submit(request, traceparent=tp)
            try:
                outputs = await fut
            except asyncio.CancelledError:
                served.batcher.cancel(handle)
                self.rpcs.end_trace(want, handle, None)
                raise
            reply = self.rpcs.infer_response(served, request, outputs, want)
            self.rpcs.end_trace(want, handle, None)
            return reply
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.rpcs.end_trace(want, handle, exc)
            return self._fail(context, exc, self.pb.ModelInferResponse())

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        """Requests are pipelined (each enters the batching core as it arrives); answers keep their order."""
        pb = self.pb
        try:
            self._auth(context)
        except XinferError as exc:
            yield pb.ModelStreamInferResponse(error_message=str(exc))
            return
        pending: asyncio.Queue = asyncio.Queue()

        async def reader() -> None:
            try:
                async for request in request_iterator:
                    try:
                        pending.put_nowait((request, self.rpcs.submit(request), None))
                    except Exception as exc:
                        pending.put_nowait((request, None, exc))
            finally:
                pending.put_nowait(None)

        task = asyncio.ensure_future(reader())
        try:
            while True:
                item = await pending.get()
                if item is None:
                    break
                request, submitted, exc = item
                if submitted is not None:
                    served, fut, handle, names = submitted
                    try:
                        outputs = await fut
                        reply = pb.ModelStreamInferResponse(
                            infer_response=self.rpcs.infer_response(served, request, outputs, names))
                    except Exception as e:
                        exc = e
                        self.rpcs.end_trace(names, handle, e)
                    else:
                        self.rpcs.end_trace(names, handle, None)
                        yield reply
                        continue
                yield self.rpcs.stream_error(request.id, exc)
        finally:
            task.cancel()


def _unsupported(name: str):
    async def handler(request: Any, context: Any) -> Any:
        grpc = require("grpc")
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, unsupported_message(name))

    return handler


def add_to_server(server: Any, servicer: InferenceServicer) -> None:
    """Register every RPC of the service with explicit (de)serializers (no generated *_pb2_grpc module)."""
    grpc = require("grpc", purpose="the gRPC endpoint")
    pb = servicer.pb
    uu = grpc.unary_unary_rpc_method_handler
    handlers = {}
    for name, (req, resp, auth) in UNARY.items():
        fn = servicer.ModelInfer if name == "ModelInfer" else servicer.unary(name, getattr(pb, resp), auth)
        handlers[name] = uu(fn, request_deserializer=getattr(pb, req).FromString,
                            response_serializer=getattr(pb, resp).SerializeToString)
    for name, (req, resp, auth) in CONTROL.items():
        handlers[name] = uu(servicer.unary(name, getattr(pb, resp), auth, awaited=True),
                            request_deserializer=getattr(pb, req).FromString,
                            response_serializer=getattr(pb, resp).SerializeToString)
    for name, (req, resp) in UNSUPPORTED.items():
        handlers[name] = uu(_unsupported(name), request_deserializer=getattr(pb, req).FromString,
                            response_serializer=getattr(pb, resp).SerializeToString)
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
        servicer.ModelStreamInfer, request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelStreamInferResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


class _DepartedClients(logging.Filter):
    """grpc.aio logs an ``ExecuteBatchError`` traceback whenever a client leaves while its answer is being sent
    (the probe report: one per departed client, a way to flood the log). Those records are counted and dropped;
    the first one of each minute is kept at DEBUG."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0
        self._last = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0] if record.exc_info else None
        if (exc is not None and exc.__name__ == "ExecuteBatchError") or "ExecuteBatchError" in str(record.msg):
            self.dropped += 1
            now = time.monotonic()
            if now - self._last >= 60:
                self._last = now
                log.debug("gRPC (grpcio): a client left while its answer was being sent (%d so far)", self.dropped)
            return False
        return True


DEPARTED = _DepartedClients()


def grpcio_options(max_message: int, net: Any, max_connection_age: float | None) -> list[tuple[str, Any]]:
    """The server's limits as grpcio channel arguments (what C-core offers; docs/security.md compares them with
    the native transport)."""
    opts: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", max(max_message, 64 << 20)),
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", 256),  # as the native transport's SETTINGS_MAX_CONCURRENT_STREAMS
        ("grpc.max_metadata_size", 16384),  # as its SETTINGS_MAX_HEADER_LIST_SIZE
        # keepalive enforcement (C-core's defaults, stated): a PING more often than every 5 min without a call is a
        # strike; after 2 strikes GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings")
        ("grpc.http2.min_ping_interval_without_data_ms", 300_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.keepalive_permit_without_calls", 0),
    ]
    if net is not None:
        opts += [("grpc.max_connection_idle_ms", int(net.idle_timeout * 1000)),  # GOAWAY after idle_timeout
                 ("grpc.server_handshake_timeout_ms", int(net.header_timeout * 1000)),
                 ("grpc.max_allowed_incoming_connections", int(net.max_connections))]
    if max_connection_age:  # GOAWAY old connections so clients re-resolve and reach new replicas
        opts += [("grpc.max_connection_age_ms", int(max_connection_age * 1000)),
                 ("grpc.max_connection_age_grace_ms", 30_000)]
    return opts


class GrpcServer:
    """The grpc.aio transport (C-core): ``--grpc-impl grpcio``.

    Limits: grpcio has no body timeout, no server-wide request-byte budget (``budget`` is kept for the
    interface) and no flood counters beyond its ping policy; see ``grpcio_options``. Drain: grpc.aio cannot send a
    GOAWAY while it keeps listening, so ``begin_drain`` starts grpc's own stop (GOAWAY, listening socket closed at
    once, open calls finish) and ``close_listener`` has nothing left to do; connections arriving during the drain
    are refused by the kernel, not answered with GOAWAY.
    """

    def __init__(self, service: Service, *, max_message: int, max_connection_age: float | None = None,
                 net: Any = None, budget: Any = None):
        self.net, self.budget = net, budget  # the network limits (limits.py); grpcio enforces what it offers
        self.service = service
        self.max_message = int(max_message)
        self.max_connection_age = max_connection_age
        self._server: Any = None
        self._stopping: asyncio.Future | None = None

    async def start(self, host: str, port: int) -> int:
        grpc = require("grpc", purpose="the gRPC endpoint")
        cygrpc = logging.getLogger("grpc._cython.cygrpc")
        if DEPARTED not in cygrpc.filters:
            cygrpc.addFilter(DEPARTED)
        self._server = grpc.aio.server(options=grpcio_options(self.max_message, self.net, self.max_connection_age))
        add_to_server(self._server, InferenceServicer(self.service))
        bound = self._server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"cannot bind the gRPC port {host}:{port} (in use?)")
        await self._server.start()
        return bound

    def pending_answers(self) -> int:
        return 0

    def begin_drain(self) -> None:
        """grpc's graceful stop without a deadline: GOAWAY, no new calls, open calls finish (``stop`` cuts them)."""
        if self._server is not None and self._stopping is None:
            self._stopping = asyncio.ensure_future(self._server.stop(None))

    async def close_listener(self) -> None:
        """Nothing to do: grpc.aio closed its listening socket when the drain began."""

    async def stop(self, grace: float | None) -> None:
        if self._server is not None:
            await self._server.stop(grace)  # the shortest grace of all stop calls wins
        if self._stopping is not None:
            await self._stopping
