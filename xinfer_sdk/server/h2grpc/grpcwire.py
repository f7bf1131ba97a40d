"""gRPC over HTTP/2, the wire format (grpc/doc/PROTOCOL-HTTP2.md): request headers, length-prefixed
messages, compression, response headers and trailers.

    head = parse_head(fields, oversize)     # path, grpc-timeout, grpc-encoding, authorization, or an error
    RESPONSE_HEADERS, trailers(code, msg)   # HPACK blocks: :status 200 + content-type; grpc-status/-message

A malformed request (RFC 9113 8.1.1: bad pseudo-headers, upper-case or connection-specific fields) gets
RST_STREAM(PROTOCOL_ERROR); a method other than POST gets HTTP 405, a content-type other than
application/grpc[+proto] HTTP 415; the rest are answered as gRPC statuses.
"""

from __future__ import annotations

import zlib

from ..grpc_server import INTERNAL, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNIMPLEMENTED
from . import hpack

CONTENT_TYPE = b"application/grpc"
RESPONSE_HEADERS = hpack.status(200) + hpack.literal(31, CONTENT_TYPE)  # 31 = content-type
ENCODINGS = (b"identity", b"gzip", b"deflate")
ACCEPT_ENCODING = hpack.literal(b"grpc-accept-encoding", b"identity,gzip,deflate")
MAX_STATUS_MESSAGE = 1024  # characters of grpc-message (a client's header list limit is often 8 KiB)
_TIMEOUT_UNITS = {ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0, ord("m"): 1e-3, ord("u"): 1e-6, ord("n"): 1e-9}
_PSEUDO = (b":method", b":scheme", b":path", b":authority")
_CONNECTION_SPECIFIC = (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
# error kinds in Head.error
RST = 0  # stream error: RST_STREAM(PROTOCOL_ERROR)
HTTP = 1  # a plain HTTP status (not a gRPC request)
GRPC = 2  # a gRPC status in a trailers-only response


class Head:
    """What the server needs from a request's headers (immutable once built; cached per header block)."""

    __slots__ = ("path", "timeout", "encoding", "authorization", "error", "route", "traceparent")

    def __init__(self, path: bytes = b"", timeout: float | None = None, encoding: bytes | None = None,
                 authorization: bytes | None = None, error: tuple[int, int, str] | None = None):
        self.path = path
        self.timeout = timeout
        self.encoding = encoding  # None = identity
        self.authorization = authorization
        self.error = error  # (RST / HTTP / GRPC, code or status, message)
        self.route = None  # set by the call layer
        self.traceparent: bytes | None = None  # W3C trace context (server/tracing.py)


def _is_lower(name: bytes) -> bool:
    return not any(65 <= c <= 90 for c in name)


def parse_head(fields: list[tuple[bytes, bytes]], oversize: bool, max_list_size: int) -> Head:
    if oversize:
        return Head(error=(GRPC, RESOURCE_EXHAUSTED, f"the request metadata is larger than the server's limit of {max_list_size} "
                                    "bytes (RESOURCE_EXHAUSTED)"))
    method = scheme = path = ctype = timeout = encoding = auth = traceparent = None
    regular = False
    seen: set[bytes] = set()
    for name, value in fields:
        if name[:1] == b":":
            if regular or name not in _PSEUDO or name in seen:
                return Head(error=(RST, 1, f"malformed request: pseudo-header {name!r} is unknown, repeated or "
                                           "after a regular field"))
            seen.add(name)
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":scheme":
                scheme = value
            continue
        regular = True
        if name == b"content-type":
            ctype = value
        elif name == b"grpc-timeout":
            timeout = value
        elif name == b"grpc-encoding":
            encoding = value
        elif name == b"authorization":
            auth = value
        elif name == b"traceparent":
            traceparent = value
        elif name == b"te":
            if value != b"trailers":
                return Head(error=(RST, 1, "malformed request: 'te' may only be 'trailers'"))
        elif not name or name in _CONNECTION_SPECIFIC or not _is_lower(name):
            return Head(error=(RST, 1, f"malformed request: field {name!r} is not allowed in HTTP/2"))
    if method is None or scheme is None or not path:
        return Head(error=(RST, 1, "malformed request: :method, :scheme and :path are required"))
    if method != b"POST":
        return Head(path=path, error=(HTTP, 405, "gRPC requests are POSTs"))
    if ctype is None or not (ctype == CONTENT_TYPE or ctype[:16] == CONTENT_TYPE and ctype[16:17] in (b"+", b";")):
        return Head(path=path, error=(HTTP, 415, "content-type must be application/grpc"))
    head = Head(path=path, authorization=auth)
    head.traceparent = traceparent
    if encoding is not None and encoding != b"identity":
        head.encoding = encoding
    if timeout is not None:
        try:
            head.timeout = parse_timeout(timeout)
        except ValueError:
            head.error = (GRPC, INVALID_ARGUMENT, f"malformed grpc-timeout {timeout.decode('latin-1')!r}")
    return head


def parse_timeout(value: bytes) -> float:
    """``grpc-timeout``: 1 to 8 ASCII digits and a unit (H M S m u n) -> seconds."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit() or value[-1] not in _TIMEOUT_UNITS:
        raise ValueError(value)
    return int(value[:-1]) * _TIMEOUT_UNITS[value[-1]]


def percent_encode(message: str) -> bytes:
    """grpc-message: UTF-8, with bytes outside 0x20..0x7E and '%' written as %XX."""
    if len(message) > MAX_STATUS_MESSAGE:
        message = message[:MAX_STATUS_MESSAGE] + "..."
    raw = message.encode("utf-8", "replace")
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw
    return b"".join(b"%%%02X" % b if not 0x20 <= b <= 0x7E or b == 0x25 else bytes((b,)) for b in raw)


def trailers(code: int, message: str = "") -> bytes:
    block = hpack.literal(b"grpc-status", str(int(code)).encode())
    if message:
        block += hpack.literal(b"grpc-message", percent_encode(message))
    return block


TRAILERS_OK = trailers(0)


def decompress(encoding: bytes | None, data: bytes, limit: int) -> bytes:
    """A message sent with the compressed flag; ValueError(code, text) when it cannot be read."""
    if encoding == b"gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == b"deflate":
        d = zlib.decompressobj()
    elif encoding is None:
        raise ValueError(INTERNAL, "a message has the compressed flag set but the request names no grpc-encoding")
    else:
        raise ValueError(UNIMPLEMENTED, f"grpc-encoding {encoding.decode('latin-1')!r} is not supported (identity, gzip, "
                             "deflate)")
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ValueError(INTERNAL, f"the {encoding.decode()} message cannot be decompressed ({exc})") from None
    if len(out) > limit or d.unconsumed_tail:
        raise ValueError(RESOURCE_EXHAUSTED, f"the decompressed message is larger than the server's limit of {limit} bytes")
    return out
