"""HTTP/1.1 wire pieces shared by the connection (http.py) and the router (routes.py): ready-made responses, the
parsed request and the response slot of a pipelined connection."""

from __future__ import annotations

from typing import Any

from .codec import error_body

_REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
            414: "URI Too Long", 415: "Unsupported Media Type", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
            499: "Client Closed Request", 500: "Internal Server Error", 501: "Not Implemented",
            503: "Service Unavailable", 504: "Gateway Timeout"}
_STATUS = {k: f"HTTP/1.1 {k} {v}\r\n".encode() for k, v in _REASONS.items()}
JSON = b"application/json"
OCTET = b"application/octet-stream"

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


# limits and states of a connection (http.py, http_output.py, http_server.py)
MAX_HEADER_BYTES = 64 * 1024  # request line + header section (431 beyond)
MAX_URI_BYTES = 16 * 1024  # request target (414 beyond)
MAX_PENDING = 256  # responses queued on one connection before it stops reading (pipelining flood)
LINGER = 2.0  # at the end of a drain, the longest an open keep-alive connection is kept (see HttpServer.close) ...
QUIET = 0.5  # ... once it has sent nothing for this long it is closed
SLICE = 16 * 1024  # bytes fed to the parser at a time, so a pause (backpressure) takes effect within one slice
BURST = 16 * 1024  # request bytes (not a body) parsed in one read callback before the connection yields to others
TICK = 0.25  # seconds between two sweeps of the connection deadlines (timeouts fire up to one tick early)
ERROR_LINGER = 1.0  # seconds input is read and discarded after an error answer before the socket is closed
REFUSED_LINGER = 0.1  # the same for a connection refused by the connection cap (it holds an fd meanwhile) ...
MAX_REFUSED_LINGERING = 16  # ... for this many at a time; beyond, refused connections are closed at once (fds)
INF = float("inf")
# connection phases (the deadline that applies)
_IDLE, _HEAD, _BODY, _BUSY, _LINGER = range(5)
# why reading is paused (bit flags)
_PENDING, _WRITE, _YIELD = 1, 2, 4
