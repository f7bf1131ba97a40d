"""HTTP/2 frames (RFC 9113 section 4 and 6): types, flags, error codes, settings, and frame builders.

A frame is a 9-byte header (24-bit length, 8-bit type, 8-bit flags, 31-bit stream id) and its payload.
``HEADER.unpack_from(buf, pos)`` gives ``(length << 8 | type, flags, stream id with the reserved bit)``.
"""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
NAMES = ("DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY", "WINDOW_UPDATE",
         "CONTINUATION")

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# error codes (RFC 9113 section 7)
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
CONNECT_ERROR = 0xA
ENHANCE_YOUR_CALM = 0xB
INADEQUATE_SECURITY = 0xC
HTTP_1_1_REQUIRED = 0xD

# settings identifiers
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME = 16384
MAX_FRAME_LIMIT = (1 << 24) - 1
MAX_WINDOW = (1 << 31) - 1

HEADER = struct.Struct(">IBI")
_SETTING = struct.Struct(">HI")
_U32 = struct.Struct(">I")
_GOAWAY = struct.Struct(">II")


class H2Error(Exception):
    """A connection error (RFC 9113 5.4.1): answered with GOAWAY(code), then the connection closes."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class StreamError(Exception):
    """A stream error (RFC 9113 5.4.2): answered with RST_STREAM(code); the connection lives on."""

    def __init__(self, sid: int, code: int, message: str):
        super().__init__(message)
        self.sid = sid
        self.code = code


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return HEADER.pack((len(payload) << 8) | ftype, flags, sid) + payload


def settings(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values.items()))


SETTINGS_ACK = frame(SETTINGS, ACK, 0)


def parse_settings(payload: bytes) -> dict[int, int]:
    """Identifier -> value; when an identifier repeats, the last value counts (RFC 9113 6.5.3)."""
    return dict(_SETTING.iter_unpack(payload))


def window_update(sid: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, _U32.pack(increment))


def rst_stream(sid: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, sid, _U32.pack(code))


def goaway(last_sid: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _GOAWAY.pack(last_sid, code) + debug)


def ping_ack(opaque: bytes) -> bytes:
    return frame(PING, ACK, 0, opaque)


def u32(payload: bytes, pos: int = 0) -> int:
    return _U32.unpack_from(payload, pos)[0]


def header_frames(sid: int, block: bytes, end_stream: bool, max_frame: int) -> bytes:
    """HEADERS (+ CONTINUATION when the block is larger than the peer's MAX_FRAME_SIZE)."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return HEADER.pack((len(block) << 8) | HEADERS, flags | END_HEADERS, sid) + block
    parts = [HEADER.pack((max_frame << 8) | HEADERS, flags, sid), block[:max_frame]]
    pos = max_frame
    while pos < len(block):
        chunk = block[pos:pos + max_frame]
        pos += len(chunk)
        parts.append(HEADER.pack((len(chunk) << 8) | CONTINUATION, END_HEADERS if pos >= len(block) else 0, sid))
        parts.append(chunk)
    return b"".join(parts)
