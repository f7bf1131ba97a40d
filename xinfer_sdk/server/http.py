"""A lean HTTP/1.1 server on asyncio + httptools (uvloop's parser): keep-alive, pipelining-safe ordering,
Content-Length and chunked bodies, ``Expect: 100-continue``, gzip/deflate request bodies, a body size cap.

One ``Connection`` per socket; requests are parsed in ``data_received`` and handed to the router, which
either answers at once or later (inference). Responses always go out in request order. Nothing here
raises into the event loop: a malformed request gets a 4xx and, when the stream cannot be trusted any
more, the connection is closed after the answer.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import deque
from typing import Any

from .codec import error_body

log = logging.getLogger(__name__)

_REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
            415: "Unsupported Media Type", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
            499: "Client Closed Request", 500: "Internal Server Error", 501: "Not Implemented",
            503: "Service Unavailable", 504: "Gateway Timeout"}
_STATUS = {k: f"HTTP/1.1 {k} {v}\r\n".encode() for k, v in _REASONS.items()}
JSON = b"application/json"
OCTET = b"application/octet-stream"
# the headers the router needs; everything else is skipped while parsing
_WANTED = {b"content-length", b"inference-header-content-length", b"authorization", b"expect", b"content-encoding",
           b"transfer-encoding"}
MAX_HEADER_BYTES = 64 * 1024
MAX_PENDING = 256  # responses queued on one connection before it stops reading (pipelining flood)
LINGER = 0.3  # seconds open connections stay open at the end of a drain (see HttpServer.close)


def response(status: int, body: bytes = b"", ctype: bytes = JSON, extra: bytes = b"", close: bool = False) -> bytes:
    """One complete HTTP/1.1 response. ``extra`` holds ready-made header lines ("Name: value\\r\\n")."""
    head = _STATUS.get(status) or f"HTTP/1.1 {status} Status\r\n".encode()
    conn = b"Connection: close\r\n" if close else b""
    return b"%sContent-Type: %s\r\nContent-Length: %d\r\n%s%s\r\n%s" % (head, ctype, len(body), conn, extra, body)


def error_response(status: int, message: str, close: bool = False, extra: bytes = b"") -> bytes:
    return response(status, error_body(message), extra=extra, close=close)


class Request:
    __slots__ = ("method", "path", "query", "headers", "body", "keep_alive")

    def __init__(self, method: bytes, path: str, query: str, headers: dict[bytes, bytes], body: bytes,
                 keep_alive: bool):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class Slot:
    """A response position on a connection; filled in when the answer is ready."""

    __slots__ = ("data", "close", "handle", "model")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.close = False
        self.handle: Any = None  # batching-core request, withdrawn if the client goes away
        self.model: Any = None


class Connection(asyncio.Protocol):
    """One client socket: parse with httptools, dispatch to ``server.router``, write answers in order."""

    def __init__(self, server: HttpServer):
        import httptools

        self.server = server
        self.router = server.router
        self.max_body = server.max_body
        self.parser = httptools.HttpRequestParser(self)
        self._parse_error = httptools.HttpParserError
        self._upgrade = httptools.HttpParserUpgrade
        self._parse_url = httptools.parse_url
        self.transport: asyncio.Transport | None = None
        self.pending: deque[Slot] = deque()
        self.closed = False
        self.closing = False  # answer what is pending, then close
        self._paused = False
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_len = 0
        self.reject: tuple[int, str] | None = None  # answer instead of dispatching (body too big, ...)

    # -- asyncio ----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for slot in self.pending:
            if slot.handle is not None and slot.model is not None:
                slot.model.batcher.cancel(slot.handle)  # a client that left cannot be answered
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except self._upgrade:
            self._fatal(501, "protocol upgrades (WebSocket, h2c) are not supported; use HTTP/1.1")
        except self._parse_error as exc:
            self._fatal(400, f"malformed HTTP request ({exc})")
        except Exception:  # never let a bug kill the loop; the client gets a 500
            log.exception("HTTP: unexpected error while handling a request")
            self._fatal(500, "internal server error (see the server log)")

    # -- httptools callbacks ----------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_HEADER_BYTES:
            raise self._parse_error("request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            raise self._parse_error(f"headers larger than {MAX_HEADER_BYTES} bytes")
        key = name.lower()
        if key in _WANTED:
            self.headers[key] = value

    def on_headers_complete(self) -> None:
        h = self.headers
        cl = h.get(b"content-length")
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                n = -1
            if n > self.max_body:
                self.reject = (413, f"request body of {n} bytes is larger than the server's limit "
                                    f"(--max-body {self.max_body} bytes)")
        if self.reject is not None:
            return
        expect = h.get(b"expect")
        if expect is not None and expect.lower() == b"100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.reject is not None:
            return
        self.body_len += len(body)
        if self.body_len > self.max_body:
            self.reject = (413, f"request body larger than the server's limit (--max-body {self.max_body} bytes)")
            self.body = []
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        p = self.parser
        keep_alive = p.should_keep_alive()
        if self.reject is not None:
            status, msg = self.reject
            self._answer(error_response(status, msg, close=True), close=True)
            self.closing = True
            return
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        enc = self.headers.get(b"content-encoding")
        if enc is not None and body:
            try:
                body = self._decompress(enc, body)
            except ValueError as exc:
                self._answer(error_response(415 if "unsupported" in str(exc) else 400, str(exc)), close=False)
                return
        url = self.url
        q = url.find(b"?")
        if q >= 0:
            path, query = url[:q], url[q + 1:]
        else:
            path, query = url, b""
        try:
            spath = path.decode("utf-8")
        except UnicodeDecodeError:
            self._answer(error_response(400, "the request path is not valid UTF-8"), close=False)
            return
        req = Request(p.get_method(), spath, query.decode("latin-1"), self.headers, body, keep_alive)
        self.router.dispatch(self, req)
        if len(self.pending) > MAX_PENDING and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def _decompress(self, enc: bytes, body: bytes) -> bytes:
        enc = enc.strip().lower()
        if enc == b"identity":
            return body
        if enc == b"gzip":
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == b"deflate":
            d = zlib.decompressobj()
        else:
            raise ValueError(f"unsupported Content-Encoding {enc.decode('latin-1')!r} (use gzip, deflate or "
                             "identity)")
        try:
            out = d.decompress(body, self.max_body + 1)
        except zlib.error as exc:
            raise ValueError(f"the {enc.decode()} request body cannot be decompressed ({exc})") from None
        if len(out) > self.max_body or d.unconsumed_tail:
            raise ValueError(f"the decompressed body is larger than the server's limit (--max-body {self.max_body})")
        return out

    # -- answers ----------------------------------------------------------------------------------------
    def _answer(self, data: bytes, close: bool) -> None:
        """Answer the request just parsed (synchronously)."""
        if self.pending:
            slot = Slot()
            self.pending.append(slot)
            self.finish(slot, data, close)
            return
        if self.closed:
            return
        self.transport.write(data)
        if close:
            self._close()

    def begin(self) -> Slot:
        """Reserve the response position of the request just parsed (answered later with ``finish``)."""
        slot = Slot()
        self.pending.append(slot)
        return slot

    def finish(self, slot: Slot, data: bytes, close: bool = False) -> None:
        slot.data = data
        slot.close = close
        if self.closed:
            return
        pending = self.pending
        write = self.transport.write
        while pending and pending[0].data is not None:
            s = pending.popleft()
            write(s.data)
            if s.close:
                self._close()
                return
        if self._paused and len(pending) <= MAX_PENDING // 2:
            self._paused = False
            self.transport.resume_reading()
        if self.closing and not pending:
            self._close()

    def _fatal(self, status: int, message: str) -> None:
        """The byte stream cannot be trusted any more: answer (after what is pending) and close."""
        self.closing = True
        if self.pending:
            slot = Slot()
            self.pending.append(slot)
            self.finish(slot, error_response(status, message, close=True), close=True)
        elif not self.closed:
            self.transport.write(error_response(status, message, close=True))
            self._close()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def close_when_idle(self) -> None:
        """Used by drain: close now if nothing is pending, else after the pending answers."""
        self.closing = True
        if not self.pending:
            self._close()


class HttpServer:
    """Owns the listening socket and the open connections (for drain)."""

    def __init__(self, router: Any, *, max_body: int, limits: Any = None, budget: Any = None):
        from .limits import RequestBudget, ServerLimits

        self.router = router
        self.max_body = int(max_body)
        self.limits = limits if limits is not None else ServerLimits()
        self.budget = budget if budget is not None else RequestBudget(self.limits.max_buffered)
        self.connections: set[Connection] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), host, port, reuse_address=True,
                                                backlog=1024)
        return self._server.sockets[0].getsockname()[1]

    def pending_answers(self) -> int:
        return sum(len(c.pending) for c in self.connections)

    def stop_listening(self) -> None:
        """Refuse new connections (drain): a client reconnecting after a 'Connection: close' answer is refused
        at once instead of landing in the accept backlog of a socket that is about to close."""
        if self._server is not None:
            self._server.close()

    async def close(self, linger: float = LINGER) -> None:
        """Close every connection once idle. A keep-alive client may have a request on the wire when its last
        answer (sent before the drain began, so without 'Connection: close') reached it: connections first stay
        open for ``linger`` seconds, answering such requests 503 + 'Connection: close', so none is dropped
        unanswered; then the idle ones are closed."""
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + linger
        while loop.time() < deadline and any(not c.closed for c in self.connections):
            await asyncio.sleep(0.01)
        for c in list(self.connections):
            c.close_when_idle()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except (asyncio.TimeoutError, Exception):  # pragma: no cover - stuck sockets are not our problem
                pass
