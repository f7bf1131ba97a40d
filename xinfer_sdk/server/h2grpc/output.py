"""The writing half of an ``H2Connection``: frames out, the client's flow-control windows, stream and
connection endings.

Everything written while one read is handled, or in one event-loop iteration (the answers of one batch), is
joined into ONE ``transport.write``. DATA never exceeds the client's connection window, stream window or
MAX_FRAME_SIZE; what does not fit waits on its stream (``out``, then ``tail`` = its trailers) and goes out when
a WINDOW_UPDATE or SETTINGS frame opens the window. While the client leaves too much waiting, or does not read
(transport ``pause_writing``), reading from it pauses.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from . import frames as F
from .hpack import TABLE_SIZE_ZERO
from .stream import Stream

log = logging.getLogger("xinfer_sdk.server.h2grpc.connection")
CLOSE_LINGER = 1.0  # seconds a connection closed after GOAWAY keeps reading (and discarding) before it closes

_PREFIX = struct.Struct(">BI")  # a gRPC message's compressed flag and length
_DATA_PREFIX = struct.Struct(">IBIBI")  # DATA frame header + gRPC message prefix


class H2Output:
    """Mixed into ``H2Connection`` (which owns the attributes used here)."""

    transport: Any
    loop: Any
    lim: Any
    streams: dict[int, Stream]

    # -- writing ----------------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._reading and not self._flush_due:
            self._flush_due = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        out = self._out
        if out:
            if not self.closed:
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _headers_block(self, block: bytes) -> bytes:
        if self._table_update:
            self._table_update = False
            return TABLE_SIZE_ZERO + block
        return block

    def send_headers(self, st: Stream, block: bytes, end_stream: bool = False) -> None:
        st.headers_sent = True
        self.n_ping = 0  # an answer: the client's (BDP, keepalive) PINGs start counting again
        if end_stream and st.out is not None:
            st.tail = block  # trailers follow the DATA that still waits for window (framed when sent: HPACK
            return  # blocks must reach the client in the order they were encoded)
        self._write(F.header_frames(st.sid, self._headers_block(block), end_stream, self.peer_max_frame))
        if end_stream:
            self._end_local(st)

    def send_data(self, st: Stream, payload: bytes) -> None:
        if st.out is not None:
            st.out += payload
            self._blocked_bytes += len(payload)
            return
        n = len(payload)
        if n <= self.send_window and n <= st.window and n <= self.peer_max_frame:
            self.send_window -= n
            st.window -= n
            self._write(F.HEADER.pack((n << 8) | F.DATA, 0, st.sid) + payload)
            return
        st.out = bytearray(payload)
        self._blocked_bytes += n
        self._push(st)

    def send_message(self, st: Stream, message: bytes) -> None:
        """One gRPC message (5-byte prefix: not compressed, length) as DATA."""
        self.send_data(st, _PREFIX.pack(0, len(message)) + message)

    def respond(self, st: Stream, head: bytes, message: bytes, trailers: bytes) -> None:
        """A whole unary answer: headers, one message, trailers (one write when the windows allow)."""
        n = len(message) + 5
        self.n_ping = 0
        if n <= self.send_window and n <= st.window and n <= self.peer_max_frame and not st.headers_sent \
                and not self._table_update and len(head) <= F.DEFAULT_MAX_FRAME and len(trailers) <= F.DEFAULT_MAX_FRAME:
            self.send_window -= n
            st.window -= n
            sid = st.sid
            st.headers_sent = True
            self._write(b"".join((F.HEADER.pack((len(head) << 8) | F.HEADERS, F.END_HEADERS, sid),
                                  head, _DATA_PREFIX.pack((n << 8) | F.DATA, 0, sid, 0, n - 5), message,
                                  F.HEADER.pack((len(trailers) << 8) | F.HEADERS, F.END_HEADERS | F.END_STREAM, sid),
                                  trailers)))
            self._end_local(st)
            return
        if not st.headers_sent:
            self.send_headers(st, head)
        self.send_message(st, message)
        self.send_headers(st, trailers, end_stream=True)

    def _push(self, st: Stream) -> None:
        out = st.out
        sid = st.sid
        while out:
            n = min(len(out), self.send_window, st.window, self.peer_max_frame)
            if n <= 0:
                self._blocked[sid] = st
                if st.parked is None:
                    st.parked = self.server.now  # the server's sweep drops it after body_timeout without window
                if self._blocked_bytes > self.lim.max_output:
                    self._pause_reading()
                return
            st.parked = None
            self.send_window -= n
            st.window -= n
            self._blocked_bytes -= n
            self._write(F.HEADER.pack((n << 8) | F.DATA, 0, sid) + bytes(out[:n]))
            del out[:n]
        st.out = None
        self._blocked.pop(sid, None)
        if st.tail is not None:
            tail, st.tail = st.tail, None
            self._write(F.header_frames(sid, self._headers_block(tail), True, self.peer_max_frame))
            self._end_local(st)
        self._maybe_resume_reading()

    def _resume_blocked(self) -> None:
        for st in list(self._blocked.values()):
            if self.send_window <= 0:
                break
            self._push(st)

    def _end_local(self, st: Stream) -> None:
        """We sent END_STREAM: the stream is done once the client's side is done too."""
        st.send_open = False
        st.closed = True
        if self.streams.get(st.sid) is st:
            del self.streams[st.sid]
            if st.recv_open:  # answered before the request ended: ask the client to stop sending
                self._write(F.rst_stream(st.sid, F.NO_ERROR))
                self._note_reset(st.sid)
        if self.close_when_idle:
            self._close_if_idle()

    def _drop(self, st: Stream) -> None:
        st.closed = True
        if st.out is not None:
            self._blocked_bytes -= len(st.out)
            st.out = None
        self._blocked.pop(st.sid, None)

    def _note_reset(self, sid: int) -> None:
        rs = self._reset_sent
        if len(rs) >= 4096:
            rs.clear()
        rs.add(sid)

    def reset_stream(self, sid: int, code: int, message: str = "") -> None:
        """Stream error: RST_STREAM(code); the call layer is told the stream is gone."""
        if message:
            log.debug("HTTP/2: stream %d reset (%d): %s", sid, code, message)
        self._write(F.rst_stream(sid, code))
        self._note_reset(sid)
        st = self.streams.pop(sid, None)
        if st is not None:
            self._drop(st)
            held = st.held
            self.app.reset(self, st)
            if held:
                self.consumed(held)
            if self.close_when_idle:
                self._close_if_idle()

    # -- connection lifetime ------------------------------------------------------------------------------
    def fail(self, code: int, message: str) -> None:
        """Connection error: GOAWAY(last stream, code, message) and close."""
        if self.closed:
            return
        log.info("HTTP/2: closing a connection: %s (error code %d)", message, code)
        self._write(F.goaway(self.accepted_sid, code, message.encode("utf-8", "replace")[:256]))
        self._flush()
        self.closed = True
        self.transport.close()

    def goaway(self) -> None:
        """Graceful: no new streams; the open ones finish; the connection closes when idle."""
        if self.closed or self.goaway_sent:
            return
        self.goaway_sent = True
        self.close_when_idle = True
        self._write(F.goaway(self.accepted_sid, F.NO_ERROR))
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        if not self.streams and not self.closed:
            if not self.goaway_sent:  # RFC 9113 6.8: endpoints SHOULD send GOAWAY before closing a connection
                self.goaway_sent = True
                self._write(F.goaway(self.accepted_sid, F.NO_ERROR))
            self._flush()
            self.closed = True
            self._linger_close()

    def _linger_close(self) -> None:
        """Close after GOAWAY without resetting a client whose next call is already on its way (RFC 9113 6.8: it
        must see the GOAWAY to know that call was not processed): send FIN, discard what still arrives
        (``closed`` is set), and close for good when the client closes or after CLOSE_LINGER seconds."""
        transport = self.transport
        try:
            if self._read_paused:
                self._read_paused = False
                transport.resume_reading()
            transport.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            transport.close()
            return
        self.loop.call_later(CLOSE_LINGER, transport.close)

    def abort(self) -> None:
        if not self.closed:
            self._flush()
            self.closed = True
            self.transport.close()

    def _pause_reading(self) -> None:
        if not self._read_paused and not self.closed:
            self._read_paused = True
            if not self._yielding:
                self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if self._read_paused and not self._write_paused and self._blocked_bytes <= self.lim.max_output // 2 \
                and not self.closed:
            self._read_paused = False
            if not self._yielding:
                self.transport.resume_reading()
