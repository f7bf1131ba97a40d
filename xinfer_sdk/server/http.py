"""A lean HTTP/1.1 server on asyncio + httptools (uvloop's parser): keep-alive, pipelining-safe ordering,
Content-Length and chunked bodies, ``Expect: 100-continue``, gzip/deflate request bodies, a body size cap.

One ``Connection`` per socket; requests are parsed in ``data_received`` and handed to the router, which
either answers at once or later (inference). Responses always go out in request order. Nothing here
raises into the event loop: a malformed request gets a 4xx and, when the stream cannot be trusted any
more, the connection is closed after the answer (after a short "lingering close" that reads and discards what
the client still sends, so the answer is not lost to a TCP reset).

Limits against clients that hold resources (``ServerLimits``, docs/security.md): a header-read, a body-read and a
keep-alive timeout, one deadline per connection checked by a single sweep task per server (no timer per request);
the per-port connection cap (``Listener.admit``); the server-wide budget of buffered request bytes
(``RequestBudget``); raw header bytes and URI length; the body cap answered as soon as it is known to be
exceeded; and write backpressure: while the socket's send buffer is above its high-water mark the connection
stops reading, so a client that never reads its answers holds at most about one buffer of them.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import deque
from typing import TYPE_CHECKING, Any

from .http_output import HttpOutput
from .http_wire import (  # noqa: F401 (re-exported)
    _BODY,
    _BUSY,
    _HEAD,
    _IDLE,
    _PENDING,
    _WRITE,
    _YIELD,
    BURST,
    INF,
    JSON,
    MAX_HEADER_BYTES,
    MAX_PENDING,
    MAX_REFUSED_LINGERING,
    MAX_URI_BYTES,
    OCTET,
    REFUSED_LINGER,
    SLICE,
    Request,
    Slot,
    error_response,
    response,
)
from .limits import flag

if TYPE_CHECKING:
    from .http_server import HttpServer

log = logging.getLogger(__name__)

# the headers the router needs; everything else is skipped while parsing
_WANTED = {b"content-length", b"inference-header-content-length", b"authorization", b"expect", b"content-encoding",
           b"transfer-encoding", b"host", b"upgrade", b"traceparent"}
class _Refuse(Exception):
    """Raised inside a parser callback: stop parsing, answer ``status`` and close (see ``Connection._fatal``)."""

    def __init__(self, status: int, message: str, extra: bytes = b""):
        super().__init__(status, message)
        self.status, self.message, self.extra = status, message, extra


class Connection(HttpOutput, asyncio.Protocol):
    """One client socket: parse with httptools, dispatch to ``server.router``, write answers in order.

    ``phase`` says which deadline applies (header read, body read, keep-alive idle, none while answers are
    pending, the lingering close); ``deadline`` is checked by ``HttpServer._sweep``."""

    # slots: beyond 30 instance attributes CPython's fast attribute access (shared-key dict) is lost on the hot path
    __slots__ = ("server", "router", "max_body", "budget", "header_timeout", "body_timeout", "keepalive_timeout",
                 "parser", "_parse_error", "_callback_error", "_upgrade", "transport", "pending", "closed", "closing",
                 "admitted", "refused", "phase", "deadline", "head_raw", "head_fresh", "_hold", "write_deadline", "_unread",
                 "_error_close", "url", "headers", "header_bytes", "hosts", "upgrade", "body", "body_len", "begun",
                 "body_left")

    def __init__(self, server: HttpServer):
        import httptools

        self.server = server
        self.router = server.router
        self.max_body = server.max_body
        self.budget = server.budget
        lim = server.limits
        self.header_timeout, self.body_timeout = lim.header_timeout, lim.body_timeout
        self.keepalive_timeout = lim.keepalive_timeout
        self.parser = httptools.HttpRequestParser(self)
        self._parse_error = httptools.HttpParserError
        self._callback_error = httptools.HttpParserCallbackError
        self._upgrade = httptools.HttpParserUpgrade
        self.transport: asyncio.Transport | None = None
        self.pending: deque[Slot] = deque()
        self.closed = False  # nothing more is written (the socket is closed or in its lingering close)
        self.closing = False  # answer what is pending, then close; input is discarded
        self.admitted = False  # counted by the listener's connection cap
        self.refused = False  # over the cap: answered 503 at once
        self.phase = _IDLE
        self.deadline = INF
        self.head_raw = 0  # raw bytes fed while the header section was incomplete (D6)
        self.head_fresh = False  # the current message began in the piece being parsed
        self._hold = 0  # why reading is paused (_PENDING | _WRITE | _YIELD)
        self.write_deadline = INF  # while the client does not read its answers: closed at this time
        self.begun = 0  # requests begun on this connection (the drain closes only connections that stay quiet)
        self._unread = b""  # input not parsed yet because reading was paused mid-read
        self._error_close = False  # the close follows an error answer: linger
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.header_bytes = 0
        self.hosts = 0
        self.upgrade = False
        self.body: list[bytes] = []
        self.body_len = 0  # body bytes held (taken from the server's RequestBudget)
        self.body_left = 0  # bytes of a Content-Length body still to come (fed to the parser in one piece)

    # -- asyncio ----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        srv = self.server
        srv.connections.add(self)
        if not srv.listener.admit():
            cap = srv.listener.max_connections
            transport.write(error_response(  # type: ignore[attr-defined]
                503, f"the server has {cap} open connections on this port, its limit ({flag('max_connections')} "
                     f"{cap}); retry later, or raise the limit", close=True))
            self.refused = True
            self._error_close = srv.refused_lingering < MAX_REFUSED_LINGERING
            srv.refused_lingering += self._error_close
            self._close(REFUSED_LINGER)
            return
        self.admitted = True
        # a new connection must send its first request within the header timeout (closed quietly otherwise)
        self.deadline = srv.clock + self.header_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.closing = True
        srv = self.server
        srv.connections.discard(self)
        if self.admitted:
            self.admitted = False
            srv.listener.release()
        elif self.refused and self._error_close:
            self._error_close = False
            srv.refused_lingering -= 1
        self._release_body()
        self._unread = b""
        for slot in self.pending:
            if slot.handle is not None and slot.model is not None:
                slot.model.batcher.cancel(slot.handle)  # a client that left cannot be answered
        self.pending.clear()

    def pause_writing(self) -> None:
        """The socket's send buffer is above its high-water mark: the client does not read its answers. Stop
        reading its requests until it does (closed after ``body_timeout`` without progress)."""
        self.write_deadline = self.server.clock + self.body_timeout
        self._hold_on(_WRITE)

    def resume_writing(self) -> None:
        self.write_deadline = INF
        self._hold_off(_WRITE)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self._hold or self._unread:  # paused mid-read: keep the order
            self._unread += data
            return
        if len(data) <= SLICE:  # the common case, inlined (_feed)
            try:
                self.parser.feed_data(data)
            except Exception as exc:
                self._failed(exc)
                return
            if self.phase == _HEAD:
                self._count_head(len(data))
            return
        view = memoryview(data)
        off, end = 0, len(data)
        while off < end:
            if self.closing:
                return
            if self._hold or (off >= BURST and self.phase != _BODY):
                self._unread = bytes(view[off:])
                if not self._hold:  # many requests (pipelined): let the other connections in before the rest
                    self._hold_on(_YIELD)
                    self.server.loop.call_soon(self._hold_off, _YIELD)
                return
            # inside a Content-Length body nothing can pause the connection: its rest goes to the parser at once
            # (one on_body per read instead of one per SLICE for a 600 kB tensor); what follows it is sliced again
            step = self.body_left if self.phase == _BODY and self.body_left > SLICE else SLICE
            self._feed(view[off:off + step])
            off += step

    def _feed(self, data: Any) -> None:
        try:
            self.parser.feed_data(data)
        except Exception as exc:
            self._failed(exc)
            return
        if self.phase == _HEAD:
            self._count_head(len(data))

    def _failed(self, exc: Exception) -> None:
        """The parser stopped: a refusal raised by a callback, an upgrade, a malformed request, or a bug."""
        if isinstance(exc, self._callback_error):
            ctx = exc.__context__
            if isinstance(ctx, _Refuse):
                self._fatal(ctx.status, ctx.message, ctx.extra)
            else:
                log.error("HTTP: unexpected error while handling a request", exc_info=ctx or exc)
                self._fatal(500, "internal server error (see the server log)")
        elif isinstance(exc, self._upgrade):  # answered normally (Upgrade ignored); what follows is not HTTP/1.1
            self.closing = True
            if not self.pending:
                self._close()
        elif isinstance(exc, self._parse_error):
            self._fatal(400, f"malformed HTTP request ({exc})")
        else:  # never let a bug kill the loop; the client gets a 500
            log.error("HTTP: unexpected error while handling a request", exc_info=exc)
            self._fatal(500, "internal server error (see the server log)")

    def _count_head(self, n: int) -> None:
        """httptools buffers an unfinished header field itself (D6): count the raw bytes fed while the header
        section is incomplete."""
        if self.head_fresh:  # the message began in this piece: what came before it belongs to another message
            self.head_fresh = False
            return
        self.head_raw += n
        if self.head_raw > MAX_HEADER_BYTES:
            self._fatal(431, f"the request header section is larger than {MAX_HEADER_BYTES} bytes (or never ends); "
                             "send smaller headers")

    # -- httptools callbacks ----------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.begun += 1
        self._reset()
        self.phase = _HEAD
        self.head_raw = 0
        self.head_fresh = True
        self.deadline = self.server.clock + self.header_timeout

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_URI_BYTES:
            raise _Refuse(414, f"the request target is longer than {MAX_URI_BYTES} bytes; send a shorter URI")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            raise _Refuse(431, f"the request headers are larger than {MAX_HEADER_BYTES} bytes; send smaller headers")
        key = name.lower()
        if key in _WANTED:
            if key == b"host":
                self.hosts += 1
            self.headers[key] = value

    def on_headers_complete(self) -> None:
        self.phase = _BODY
        self.deadline = self.server.clock + self.body_timeout
        p = self.parser
        h = self.headers
        if self.hosts != 1 and (self.hosts or p.get_http_version() == "1.1"):
            raise _Refuse(400, f"an HTTP/1.1 request needs exactly one Host header (RFC 9112 section 3.2), this one "
                               f"has {self.hosts}")
        te = h.get(b"transfer-encoding")
        if te is not None and te.strip().lower() != b"chunked":
            raise _Refuse(501, f"Transfer-Encoding {te.decode('latin-1')!r} is not supported: send the body with "
                               "Content-Length or 'Transfer-Encoding: chunked' alone")
        cl = h.get(b"content-length")
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                n = -1
            if n > self.max_body:
                raise _Refuse(413, f"request body of {n} bytes is larger than the server's limit (--max-body "
                                   f"{self.max_body} bytes)")
            if te is None and n > 0:
                self.body_left = n
        if (b"upgrade" in h or self.url[:1] != b"/") and p.should_upgrade():  # Upgrade, or CONNECT's authority
            if p.get_method() == b"CONNECT":
                raise _Refuse(405, "CONNECT is not supported: this server is not a proxy", b"Allow: GET, POST\r\n")
            if te is not None or (cl is not None and cl.strip() not in (b"", b"0")):
                raise _Refuse(501, "protocol upgrades (WebSocket, h2c) are not supported, and a request body cannot "
                                   "follow an Upgrade header; send the request without 'Connection: upgrade'")
            self.upgrade = True  # served as a plain request (RFC 9110 7.8 allows ignoring Upgrade), then closed
        expect = h.get(b"expect")
        if expect is not None and expect.lower() == b"100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        n = len(body)
        if self.body_len + n > self.max_body:
            raise _Refuse(413, f"request body larger than the server's limit (--max-body {self.max_body} bytes)")
        b = self.budget  # RequestBudget.take, inlined (hot path)
        if b.used + n > b.limit:
            b.refused += 1
            raise _Refuse(503, f"the server holds {self.budget.used} bytes of request bodies still arriving, its "
                               f"limit ({flag('max_buffered')} {self.budget.limit}); retry later")
        b.used += n
        self.body_len += n
        self.body_left -= n
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.phase = _BUSY
        self.deadline = INF
        p = self.parser
        keep_alive = p.should_keep_alive() and not self.upgrade
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        if self.body_len:  # the model has the bytes now: give them back to the budget
            self.budget.give(self.body_len)
            self.body_len = 0
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
        if len(self.pending) > MAX_PENDING and not self._hold & _PENDING:
            self._hold_on(_PENDING)

    def _release_body(self) -> None:
        if self.body_len:
            self.budget.give(self.body_len)
            self.body_len = 0
        self.body = []

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
        name = enc.decode()
        try:
            out = d.decompress(body, self.max_body + 1)
        except zlib.error as exc:
            raise ValueError(f"the {name} request body cannot be decompressed ({exc})") from None
        if len(out) > self.max_body or d.unconsumed_tail:
            raise ValueError(f"the decompressed body is larger than the server's limit (--max-body {self.max_body})")
        if not d.eof:
            raise ValueError(f"the {name} request body is truncated (the compressed stream does not end); send all "
                             "of it")
        if d.unused_data:
            raise ValueError(f"the {name} request body has data after the end of its compressed stream (a second "
                             f"{name} member?); send a single {name} stream")
        return out
