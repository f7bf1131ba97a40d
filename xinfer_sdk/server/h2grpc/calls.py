"""The calls of ``inference.GRPCInferenceService`` on native HTTP/2 streams: routing, message deframing,
unary answers, ModelInfer through the batching core, and the ordered ModelStreamInfer.

A unary call is answered when its request has ended (normally one read: HEADERS + DATA with END_STREAM).
ModelInfer is decoded, validated and enqueued at once; the batching core completes its future and a done
callback writes the answer (no task per request). ModelStreamInfer enqueues each message as it arrives and
answers in request order; after the client's END_STREAM and the last answer come the OK trailers.
The RPCs themselves (and the error -> status mapping) are shared with the grpc.aio transport:
``xinfer_sdk.server.grpc_server.KServeRpcs``.

Request bytes the layer holds (a partial message, or a whole unary one waiting for END_STREAM) are counted per
stream (``st.held``), per connection (``conn.buffered``, at most ``max_buffered``) and against the server-wide
``RequestBudget``; beyond either the call ends RESOURCE_EXHAUSTED. The connection returns flow-control credit for
what the layer no longer holds. ``expire`` ends a call whose request did not arrive in time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from typing import Any

from ...errors import InvalidInput, XinferError
from ..grpc_server import (
    CONTROL,
    DEADLINE_EXCEEDED,
    INTERNAL,
    RESOURCE_EXHAUSTED,
    SERVICE,
    UNARY,
    UNIMPLEMENTED,
    UNSUPPORTED,
    KServeRpcs,
    grpc_status,
    unsupported_message,
)
from ..limits import RequestBudget
from ..service import Service
from . import frames as F
from . import grpcwire as W
from .hpack import status as http_status

log = logging.getLogger(__name__)

UNARY_CALL, INFER, STREAM, NOT_SUPPORTED, ASYNC_CALL = range(5)


class Route:
    __slots__ = ("name", "kind", "parse", "fn", "auth", "request_type")

    def __init__(self, name: str, kind: int, parse: Any, fn: Any, auth: bool, request_type: str):
        self.name = name
        self.kind = kind
        self.parse = parse
        self.fn = fn
        self.auth = auth
        self.request_type = request_type


class GrpcCalls:
    """The call layer behind every ``H2Connection`` of a server (hooks: head, start, data, reset)."""

    def __init__(self, service: Service, *, max_message: int, max_header_list: int,
                 budget: RequestBudget | None = None):
        self.svc = service
        self.budget = budget if budget is not None else RequestBudget(1 << 30)
        self.rpcs = KServeRpcs(service)
        self.max_message = int(max_message)
        self.max_header_list = int(max_header_list)
        pb = self.rpcs.pb
        self.stream_response = pb.ModelStreamInferResponse
        self.decode_error = __import__("google.protobuf.message", fromlist=["DecodeError"]).DecodeError
        self.routes: dict[bytes, Route] = {}
        for name, (req, _resp, auth) in UNARY.items():
            kind = INFER if name == "ModelInfer" else UNARY_CALL
            fn = None if kind == INFER else self.rpcs.handler(name)
            self._route(name, kind, getattr(pb, req).FromString, fn, auth, req)
        for name, (req, _resp, auth) in CONTROL.items():
            self._route(name, ASYNC_CALL, getattr(pb, req).FromString, self.rpcs.handler(name), auth, req)
        for name, (req, _resp) in UNSUPPORTED.items():
            self._route(name, NOT_SUPPORTED, None, None, False, req)
        self._route("ModelStreamInfer", STREAM, pb.ModelInferRequest.FromString, None, True, "ModelInferRequest")

    def _route(self, name: str, kind: int, parse: Any, fn: Any, auth: bool, request_type: str) -> None:
        self.routes[f"/{SERVICE}/{name}".encode()] = Route(name, kind, parse, fn, auth, request_type)

    # -- connection hooks ---------------------------------------------------------------------------------
    def head(self, fields: list[tuple[bytes, bytes]], oversize: bool) -> W.Head:
        head = W.parse_head(fields, oversize, self.max_header_list)
        if head.error is None:
            head.route = self.routes.get(head.path)
            if head.route is None:
                head.error = (W.GRPC, UNIMPLEMENTED, f"unknown method {head.path.decode('latin-1')!r} (this server "
                                                     f"serves {SERVICE})")
        return head

    def start(self, conn: Any, st: Any, head: W.Head, end_stream: int) -> None:
        err = head.error
        if err is not None:
            kind, code, message = err
            if kind == W.RST:
                conn.reset_stream(st.sid, F.PROTOCOL_ERROR, message)
            elif kind == W.HTTP:
                conn.send_headers(st, http_status(code), end_stream=True)
            else:
                self._status(conn, st, code, message)
            return
        route = head.route
        if route.kind == NOT_SUPPORTED:
            self._status(conn, st, UNIMPLEMENTED, unsupported_message(route.name))
            return
        if route.auth and self.svc.auth_required:
            try:
                self.svc.check_auth(head.authorization)
            except XinferError as exc:
                if route.kind == STREAM:  # as the grpc.aio transport: one error answer, then OK
                    reply = self.stream_response(error_message=str(exc)).SerializeToString()
                    conn.respond(st, W.RESPONSE_HEADERS, reply, W.TRAILERS_OK)
                else:
                    self._status(conn, st, *grpc_status(exc))
                return
        st.call = head
        if head.timeout is not None:
            st.deadline = conn.loop.time() + head.timeout
        if route.kind == STREAM:
            st.queue = deque()  # (a unary request is timed from its start by the connection's sweep)
        if end_stream:
            self.data(conn, st, b"", True)

    def data(self, conn: Any, st: Any, chunk: bytes | memoryview, end: int) -> None:
        head = st.call
        if head is None:
            return  # answered already: the rest of the request is dropped
        msg = st.msg
        if msg is None:
            # the common case: one whole, uncompressed message in the request's last DATA frame
            if end and len(chunk) >= 5 and chunk[0] == 0 and head.route.kind != STREAM and st.ctx is None:
                n = int.from_bytes(chunk[1:5], "big")
                if n == len(chunk) - 5 and n <= self.max_message:
                    self._unary(conn, st, head, chunk[5:])
                    return
            if not chunk and not end:
                return
            msg = st.msg = bytearray()
        if chunk:
            n = len(chunk)
            if conn.buffered + n > conn.lim.max_buffered:
                self._status(conn, st, RESOURCE_EXHAUSTED, "too many request bytes are waiting on this connection "
                                                           f"(at most {conn.lim.max_buffered})")
                return
            if not self.budget.take(n):
                self._status(conn, st, RESOURCE_EXHAUSTED, "the server holds too many partial requests right now "
                                                           "(--max-buffered); retry later")
                return
            msg += chunk
            conn.buffered += n
            st.held += n
        streaming = head.route.kind == STREAM
        while len(msg) >= 5:
            n = int.from_bytes(msg[1:5], "big")
            if n > self.max_message:
                self._status(conn, st, RESOURCE_EXHAUSTED, f"received message larger than max ({n} vs. "
                                                           f"{self.max_message})")
                return
            if len(msg) < n + 5:
                conn.expect(st, n + 5 - len(msg))
                break
            flag = msg[0]
            payload = bytes(msg[5:5 + n])
            del msg[:5 + n]
            if flag:
                try:
                    payload = W.decompress(head.encoding, payload, self.max_message)
                except ValueError as exc:
                    code, text = exc.args
                    self._status(conn, st, code, text, W.ACCEPT_ENCODING if code == UNIMPLEMENTED else b"")
                    return
            if streaming:
                self._unhold(conn, st, n + 5)
                self._stream_message(conn, st, head, payload)
                if st.closed:
                    return
            elif st.ctx is not None:
                self._status(conn, st, INTERNAL, f"{head.route.name} takes one request message, got more")
                return
            else:
                st.ctx = payload  # still held (and timed) until the request ends
        if streaming:
            st.t0 = (st.t0 or conn.server.now) if msg else None  # a message in progress must complete in time
        if not end:
            return
        if msg:
            self._status(conn, st, INTERNAL, "the request ended inside a message")
            return
        st.msg = None
        if streaming:
            self._stream_flush(conn, st)
        elif st.ctx is None:
            self._status(conn, st, INTERNAL, f"{head.route.name} needs a request message, the request had none")
        else:
            payload, st.ctx = st.ctx, None
            self._unhold(conn, st, st.held)
            self._unary(conn, st, head, payload)

    def expire(self, conn: Any, st: Any, message: str) -> None:
        """The request did not arrive in time (body timeout or grpc-timeout): DEADLINE_EXCEEDED trailers, then
        RST_STREAM(CANCEL) so the client stops sending."""
        held = st.held
        self.reset(conn, st)
        if held:
            conn.consumed(held)
        if not st.closed and st.out is None:
            st.recv_open = False  # the RST below (not NO_ERROR) tells the client to stop
            block = W.trailers(DEADLINE_EXCEEDED, message)
            conn.send_headers(st, block if st.headers_sent else W.RESPONSE_HEADERS + block, end_stream=True)
        conn.reset_stream(st.sid, F.CANCEL, message)

    def reset(self, conn: Any, st: Any) -> None:
        """The client reset the stream or went away: withdraw what is still queued."""
        self._release(conn, st)
        if st.handle is not None and st.ctx is not None:
            st.ctx[0].batcher.cancel(st.handle)
            self.rpcs.end_trace(st.ctx[2], st.handle, None)
            st.handle = None
        if st.queue:
            for entry in st.queue:
                fut = entry[2]
                if fut is not None and not fut.done():
                    entry[1].batcher.cancel(entry[3])
                    self.rpcs.end_trace(entry[4], entry[3], None)
            st.queue.clear()

    # -- answers ------------------------------------------------------------------------------------------
    def _unhold(self, conn: Any, st: Any, n: int) -> None:
        """``n`` held bytes reached the model (or were dropped)."""
        if n:
            st.held -= n
            conn.buffered -= n
            self.budget.give(n)

    def _release(self, conn: Any, st: Any) -> None:
        st.call = None
        st.msg = None
        if st.held:
            self._unhold(conn, st, st.held)

    def _status(self, conn: Any, st: Any, code: int, message: str, extra: bytes = b"") -> None:
        """End the call with a gRPC status (trailers-only when nothing was sent yet)."""
        self._release(conn, st)
        if st.closed:
            return
        block = W.trailers(code, message)
        conn.send_headers(st, block if st.headers_sent else W.RESPONSE_HEADERS + extra + block, end_stream=True)

    def _left(self, st: Any, loop: asyncio.AbstractEventLoop) -> float | None:
        return None if st.deadline is None else max(0.0, st.deadline - loop.time())

    def _parse(self, head: W.Head, payload: bytes) -> Any:
        try:
            return head.route.parse(payload)
        except self.decode_error:
            raise InvalidInput(f"the request message is not a valid inference.{head.route.request_type}") from None

    def _unary(self, conn: Any, st: Any, head: W.Head, payload: bytes) -> None:
        route = head.route
        st.call = None
        try:
            request = self._parse(head, payload)
            if route.kind == INFER:
                served, fut, handle, want = self.rpcs.submit(request, self._left(st, conn.loop),
                                                              held=len(conn.streams) - 1, traceparent=head.traceparent)
                st.handle = handle
                st.ctx = (served, request, want)
                fut.add_done_callback(functools.partial(self._infer_done, conn, st))
                return
            if route.kind == ASYNC_CALL:  # model load / unload: answered when done, the loop serves on meanwhile
                st.ctx = task = asyncio.ensure_future(route.fn(request))
                task.add_done_callback(functools.partial(self._async_done, conn, st))
                return
            reply = route.fn(request).SerializeToString()
        except Exception as exc:
            self._status(conn, st, *grpc_status(exc))
            return
        conn.respond(st, W.RESPONSE_HEADERS, reply, W.TRAILERS_OK)

    def _infer_done(self, conn: Any, st: Any, fut: asyncio.Future) -> None:
        if st.closed:
            return
        served, request, want = st.ctx
        handle = st.handle
        st.ctx = st.handle = None
        try:
            reply = self.rpcs.infer_response(served, request, fut.result(), want).SerializeToString()
        except Exception as exc:
            self._status(conn, st, *grpc_status(exc))
            self.rpcs.end_trace(want, handle, exc)
            return
        conn.respond(st, W.RESPONSE_HEADERS, reply, W.TRAILERS_OK)
        self.rpcs.end_trace(want, handle, None)

    def _async_done(self, conn: Any, st: Any, task: asyncio.Future) -> None:
        st.ctx = None
        if st.closed:
            return
        if task.cancelled():
            self._status(conn, st, *grpc_status(asyncio.CancelledError()))
            return
        try:
            reply = task.result().SerializeToString()
        except Exception as exc:
            self._status(conn, st, *grpc_status(exc))
            return
        conn.respond(st, W.RESPONSE_HEADERS, reply, W.TRAILERS_OK)

    # -- ModelStreamInfer ---------------------------------------------------------------------------------
    def _stream_message(self, conn: Any, st: Any, head: W.Head, payload: bytes) -> None:
        request = None
        try:
            request = self._parse(head, payload)
            served, fut, handle, names = self.rpcs.submit(request, self._left(st, conn.loop),
                                                          traceparent=head.traceparent)
        except Exception as exc:
            st.queue.append((request, None, None, None, None, self.rpcs.stream_error(
                request.id if request is not None else "", exc).SerializeToString()))
            self._stream_flush(conn, st)
            return
        st.queue.append((request, served, fut, handle, names, None))
        fut.add_done_callback(functools.partial(self._stream_ready, conn, st))

    def _stream_ready(self, conn: Any, st: Any, fut: asyncio.Future) -> None:
        if not st.closed:
            self._stream_flush(conn, st)

    def _stream_flush(self, conn: Any, st: Any) -> None:
        q = st.queue
        while q:
            request, served, fut, handle, names, reply = q[0]
            if fut is not None:
                if not fut.done():
                    break
                error = None
                try:
                    reply = self.stream_response(infer_response=self.rpcs.infer_response(
                        served, request, fut.result(), names)).SerializeToString()
                except Exception as exc:
                    error = exc
                    reply = self.rpcs.stream_error(request.id, exc).SerializeToString()
                self.rpcs.end_trace(names, handle, error)
            q.popleft()
            if not st.headers_sent:
                conn.send_headers(st, W.RESPONSE_HEADERS)
            conn.send_message(st, reply)
        if not q and not st.recv_open and st.msg is None and not st.closed:  # the client is done, so are we
            self._status(conn, st, 0, "")
