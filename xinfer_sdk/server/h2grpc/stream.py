"""Per-connection limits and the state of one HTTP/2 stream (shared by the reading and writing halves)."""

from __future__ import annotations

from typing import Any


class Limits:
    """What a connection advertises and enforces (built by ``NativeGrpcServer`` from the server's ``ServerLimits``).

    ``max_buffered``: request bytes one connection may hold in messages that have not reached the model yet
    (default: one largest message + 1 MiB); the connection window is kept above it, so a client that stays within
    it never stalls on flow control, and credit is returned only for bytes the call layer has consumed.
    """

    def __init__(self, *, max_message: int, max_streams: int = 256, stream_window: int = 8 << 20,
                 connection_window: int = 64 << 20, max_frame: int = 1 << 20, max_header_list: int = 16384,
                 max_header_block: int = 256 << 10, max_buffered: int | None = None, max_output: int = 64 << 20,
                 header_timeout: float = 10.0, body_timeout: float = 30.0, idle_timeout: float = 30.0):
        self.max_message = max_message
        self.max_streams = max_streams
        self.stream_window = stream_window
        self.max_frame = max_frame
        self.max_header_list = max_header_list
        self.max_header_block = max_header_block
        self.max_buffered = max_buffered if max_buffered is not None else max_message + (1 << 20)
        # a client within max_buffered must never wait for connection credit (it comes back only as messages
        # reach the model)
        self.connection_window = min(max(connection_window, self.max_buffered + (1 << 20)), (1 << 31) - 1)
        self.max_output = max_output  # answers waiting for the client's windows before reading pauses
        self.header_timeout = header_timeout  # the client preface and its first SETTINGS
        self.body_timeout = body_timeout  # a request (unary) or one message (stream) once begun; a parked answer
        self.idle_timeout = idle_timeout  # a connection with no open stream


class Stream:
    """One stream: HTTP/2 state plus the slots the call layer uses (``call``, ``msg``, ``ctx``, ...)."""

    __slots__ = ("sid", "recv_open", "send_open", "closed", "headers_sent", "window", "recv_window",
                 "recv_unacked", "granted", "out", "tail", "call", "msg", "ctx", "handle", "queue", "deadline", "t0",
                 "held", "parked")

    def __init__(self, sid: int, window: int, recv_window: int):
        self.sid = sid
        self.recv_open = True  # the client may still send (no END_STREAM yet)
        self.send_open = True  # we have not sent END_STREAM yet
        self.closed = False  # reset, finished or connection gone: nothing more is sent
        self.headers_sent = False
        self.window = window  # the client's window for our DATA on this stream
        self.recv_window = recv_window
        self.recv_unacked = 0  # consumed bytes not yet returned as stream credit
        self.granted = 0  # credit given ahead for the rest of a large message (taken back as it is consumed)
        self.out: bytearray | None = None  # DATA payload waiting for window
        self.tail: bytes | None = None  # the trailers' header block, sent once ``out`` is empty
        self.call: Any = None
        self.msg: bytearray | None = None
        self.ctx: Any = None
        self.handle: Any = None
        self.queue: Any = None
        self.deadline: float | None = None  # grpc-timeout (loop time)
        self.t0: float | None = None  # the request (unary) or the message in progress (stream) began
        self.held = 0  # request bytes the call layer holds (partial message + a whole unary one awaiting END_STREAM)
        self.parked: float | None = None  # our answer has waited for the client's window since
