"""The server side of one HTTP/2 connection (RFC 9113) as gRPC uses it, as an asyncio Protocol: the reading
half (the writing half, ``H2Output``, is in output.py).

Reads: the client preface, then frames parsed in place from each read (a partial frame waits in a
bytearray). Header blocks (HEADERS + CONTINUATION) go through HPACK; a block that leaves the dynamic table
unchanged is remembered with what it meant, so a client repeating its headers (gRPC clients index them
all) costs one dict lookup per request (the cache is bounded in bytes and holds only blocks that opened a valid
call). DATA is counted against our windows, and credit goes back only for bytes the call layer has consumed
(a whole message handed to the model, or dropped; ``expect`` lets one large message arrive whole). The call
layer (``app``) sees ``head`` (what a header block means), ``start``, ``data``, ``reset`` and ``expire`` per
stream, and answers with ``respond``, ``send_headers`` and ``send_message``.

Errors: a connection error sends GOAWAY(last stream, code) and closes; a stream error sends RST_STREAM and
the connection goes on. Limits: concurrent streams (REFUSED_STREAM beyond), frame size, header block size (and
CONTINUATION count), buffered request bytes, and reading pauses while the client does not read its answers.
Flood counters, timeouts, the drain and the work budget: guard.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import frames as F
from . import guard as G
from .control import H2Control
from .guard import WORK_BUDGET, H2Guard
from .hpack import Decoder, HpackError, HpackFlood
from .output import H2Output
from .stream import Limits, Stream

__all__ = ["H2Connection", "Limits", "Stream"]

log = logging.getLogger(__name__)

HEAD_CACHE_BYTES = 64 << 10  # header blocks remembered per connection (bytes of blocks)
HEAD_CACHE_BLOCK = 4096  # larger blocks are not remembered


class H2Connection(H2Control, H2Output, H2Guard, asyncio.Protocol):
    def __init__(self, server: Any, app: Any, limits: Limits, loop: asyncio.AbstractEventLoop):
        self.server = server
        self.app = app
        self.lim = limits
        self.loop = loop
        self.transport: Any = None
        self.streams: dict[int, Stream] = {}
        self.decoder = Decoder(4096, limits.max_header_list)
        self._heads: dict[bytes, Any] = {}  # header block -> app.head(...) while the HPACK table is unchanged
        self._heads_bytes = 0
        self.last_sid = 0  # highest stream id the client opened
        self.accepted_sid = 0  # highest stream id we process (what GOAWAY reports)
        self.closed = False
        self.goaway_sent = False
        self.goaway_received = False
        self.close_when_idle = False
        self._preface = True
        self._settings_due = True  # the client's first frame must be SETTINGS
        self._buf = bytearray()
        self._need = 0
        self._cont: list | None = None  # [sid, end_stream, fragments, size] while CONTINUATION is due
        self._reset_sent: set[int] = set()  # streams we reset: late frames for them are ignored
        self.started = 0  # streams accepted
        self.admitted = False  # counted by the server's Listener (released when the connection is lost)
        self.expires: float | None = None  # max connection age (set by the server)
        self._out: list[bytes] = []
        self._reading = False
        self._flush_due = False
        self._read_paused = False
        self._write_paused = False
        self.buffered = 0  # request bytes held in partial messages (the call layer keeps it)
        self._blocked: dict[int, Stream] = {}  # streams whose DATA waits for window
        self._blocked_bytes = 0
        # the client's settings
        self.send_window = F.DEFAULT_WINDOW
        self.peer_window = F.DEFAULT_WINDOW
        self.peer_max_frame = F.DEFAULT_MAX_FRAME
        self._table_update = False  # the client shrank its HPACK table: tell it ours stays empty
        # our receive windows
        self.recv_window = limits.connection_window
        self.recv_unacked = 0
        self._conn_update_at = min(limits.connection_window // 2, 1 << 20)
        self._stream_update_at = limits.stream_window // 2
        self._max_block = limits.max_header_block
        self._guard_init(server.now)

    # -- asyncio ----------------------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        lim = self.lim
        transport.write(F.settings({F.MAX_CONCURRENT_STREAMS: lim.max_streams,
                                    F.INITIAL_WINDOW_SIZE: lim.stream_window, F.MAX_FRAME_SIZE: lim.max_frame,
                                    F.MAX_HEADER_LIST_SIZE: lim.max_header_list})
                        + F.window_update(0, lim.connection_window - F.DEFAULT_WINDOW))
        server = self.server
        if not server.admit():
            self.refuse(b"connection limit reached")
            return
        self.admitted = True
        server.connections.add(self)
        if server.draining:
            self.late()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.admitted:
            self.admitted = False
            self.server.release()
        self.server.connections.discard(self)
        streams = list(self.streams.values())
        self.streams.clear()
        self._blocked.clear()
        for st in streams:
            st.closed = True
            self.app.reset(self, st)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._maybe_resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return
            data = bytes(buf)
            buf.clear()
        self._reading = True
        try:
            if self._preface:
                data = self._check_preface(data)
                if data is None:
                    return
            pos = self._frames(data)
            if pos < len(data):
                self._buf += data[pos:]
        except F.H2Error as exc:
            self.fail(exc.code, str(exc))
        except Exception:  # a bug must not kill the loop or leave the client hanging
            log.exception("HTTP/2: unexpected error on a connection")
            self.fail(F.INTERNAL_ERROR, "internal server error")
        finally:
            self._reading = False
        self._flush()
        if len(data) >= WORK_BUDGET:
            self._yield_loop()

    # -- reading ----------------------------------------------------------------------------------------
    def _check_preface(self, data: bytes) -> bytes | None:
        n = len(F.PREFACE)
        if data[:n] != F.PREFACE[:len(data)]:
            raise F.H2Error(F.PROTOCOL_ERROR, "invalid connection preface (this port speaks gRPC over HTTP/2)")
        if len(data) < n:
            self._buf += data
            self._need = n
            return None
        self._preface = False
        self._need = 9
        return data[n:]

    def _frames(self, data: bytes) -> int:
        pos, end = 0, len(data)
        unpack = F.HEADER.unpack_from
        max_frame = self.lim.max_frame
        while end - pos >= 9:
            lt, flags, sid = unpack(data, pos)
            length = lt >> 8
            if length > max_frame:
                raise F.H2Error(F.FRAME_SIZE_ERROR, f"a frame of {length} bytes exceeds our MAX_FRAME_SIZE "
                                                    f"{max_frame}")
            stop = pos + 9 + length
            if stop > end:
                self._need = stop - pos
                return pos
            ftype = lt & 0xFF
            sid &= 0x7FFFFFFF
            p = pos + 9
            pos = stop
            if self._cont is not None and ftype != F.CONTINUATION:
                raise F.H2Error(F.PROTOCOL_ERROR, f"{F.NAMES[ftype] if ftype < 10 else ftype} frame while a "
                                                  "header block awaits CONTINUATION")
            if self._settings_due:
                if ftype != F.SETTINGS or flags & F.ACK:
                    raise F.H2Error(F.PROTOCOL_ERROR, "the client preface must end with a SETTINGS frame")
                self._settings_due = False
            try:
                if ftype == F.DATA:
                    self._on_data(data, p, stop, flags, sid)
                elif ftype == F.HEADERS:
                    self._on_headers(data, p, stop, flags, sid)
                elif ftype == F.WINDOW_UPDATE:
                    self._on_window_update(data, p, stop, sid)
                elif ftype == F.PING:
                    self._on_ping(data, p, stop, flags, sid)
                elif ftype == F.SETTINGS:
                    self._on_settings(data, p, stop, flags, sid)
                elif ftype == F.RST_STREAM:
                    self._on_rst_stream(data, p, stop, sid)
                elif ftype == F.CONTINUATION:
                    self._on_continuation(data, p, stop, flags, sid)
                elif ftype == F.PRIORITY:
                    self.n_priority += 1
                    if self.n_priority > G.PRIORITY_FRAMES:
                        self._calm("PRIORITY frames")
                    if sid == 0:
                        raise F.H2Error(F.PROTOCOL_ERROR, "PRIORITY on stream 0")
                    if stop - p != 5:
                        raise F.StreamError(sid, F.FRAME_SIZE_ERROR, "PRIORITY frame must be 5 bytes")
                elif ftype == F.GOAWAY:
                    self._on_goaway(data, p, stop, sid)
                elif ftype == F.PUSH_PROMISE:
                    raise F.H2Error(F.PROTOCOL_ERROR, "a client must not send PUSH_PROMISE")
                elif stop == p:  # unknown frame types are ignored (RFC 9113 5.5), empty ones counted
                    self._empty()
            except F.StreamError as exc:
                self.n_errors += 1
                if self.n_errors > G.STREAM_ERRORS:
                    self._calm("stream errors")
                self.reset_stream(exc.sid, exc.code, str(exc))
            if self.closed:
                return end
        self._need = 9
        return pos

    def _empty(self) -> None:
        self.n_empty += 1
        if self.n_empty > G.EMPTY_FRAMES:
            self._calm("empty frames")

    def _on_data(self, data: bytes, p: int, stop: int, flags: int, sid: int) -> None:
        length = stop - p
        self.recv_window -= length
        if self.recv_window < 0:
            raise F.H2Error(F.FLOW_CONTROL_ERROR, "the client sent more DATA than the connection window allows")
        if sid == 0:
            raise F.H2Error(F.PROTOCOL_ERROR, "DATA on stream 0")
        st = self.streams.get(sid)
        if st is None:
            if sid > self.last_sid or not sid & 1:
                raise F.H2Error(F.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            if sid in self._reset_sent:  # a stream we reset or answered early: its late DATA is dropped
                self.consumed(length)
                return
            # the client ended this stream before: a stream error, and the bytes stay counted against the
            # connection window (RFC 9113 6.1, 6.9)
            raise F.StreamError(sid, F.STREAM_CLOSED, "DATA after END_STREAM")
        if not st.recv_open:
            raise F.StreamError(sid, F.STREAM_CLOSED, "DATA after END_STREAM")
        st.recv_window -= length
        if st.recv_window < 0:
            raise F.StreamError(sid, F.FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        if flags & F.PADDED:
            if length < 1 or data[p] >= length:
                raise F.H2Error(F.PROTOCOL_ERROR, "DATA padding is longer than the frame")
            stop -= data[p]
            p += 1
        end = flags & F.END_STREAM
        if end:
            st.recv_open = False
        elif stop == p:
            self._empty()
        held = st.held
        self.app.data(self, st, memoryview(data)[p:stop], end)  # no copy: ``data`` is immutable bytes
        held += length - st.held  # what the call layer consumed: the frame, and what it held before, less what
        if held:  # it holds now
            unacked = self.recv_unacked + held
            if unacked >= self._conn_update_at:
                self._write(F.window_update(0, unacked))
                self.recv_window += unacked
                unacked = 0
            self.recv_unacked = unacked
            if st.recv_open and not st.closed:
                self._stream_credit(st, held)

    def consumed(self, n: int, st: Any = None) -> None:
        """Flow-control credit for ``n`` request bytes the call layer no longer holds (WINDOW_UPDATE once enough
        has accumulated)."""
        self.recv_unacked += n
        if self.recv_unacked >= self._conn_update_at:
            self._write(F.window_update(0, self.recv_unacked))
            self.recv_window += self.recv_unacked
            self.recv_unacked = 0
        if st is not None and st.recv_open and not st.closed:
            self._stream_credit(st, n)

    def _stream_credit(self, st: Any, n: int) -> None:
        if st.granted:
            given = min(st.granted, n)
            st.granted -= given
            n -= given
        st.recv_unacked += n
        if st.recv_unacked >= self._stream_update_at:
            self._write(F.window_update(st.sid, st.recv_unacked))
            st.recv_window += st.recv_unacked
            st.recv_unacked = 0

    def expect(self, st: Any, need: int) -> None:
        """The call layer holds part of a message of which ``need`` more bytes are due: open the stream window so
        they can come (the message was admitted against the limits already)."""
        short = need - st.recv_window
        if short > 0 and st.recv_open:
            self._write(F.window_update(st.sid, short))
            st.recv_window += short
            st.granted += short

    def _on_headers(self, data: bytes, p: int, stop: int, flags: int, sid: int) -> None:
        if sid == 0:
            raise F.H2Error(F.PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & F.PADDED:
            if stop - p < 1 or data[p] > stop - p - 1:
                raise F.H2Error(F.PROTOCOL_ERROR, "HEADERS padding is longer than the frame")
            stop -= data[p]
            p += 1
        bad = False
        if flags & F.PRIORITY_FLAG:
            if stop - p < 5:
                raise F.H2Error(F.FRAME_SIZE_ERROR, "HEADERS too short for its priority fields")
            bad = F.u32(data, p) & 0x7FFFFFFF == sid  # a stream depending on itself: stream error
            p += 5
        size = stop - p
        if not 0 < size <= self._max_block:
            if size:
                raise F.H2Error(F.ENHANCE_YOUR_CALM, f"a header block larger than {self._max_block} bytes")
            self._empty()
        if flags & F.END_HEADERS:
            self._headers_done(sid, data[p:stop], flags & F.END_STREAM, bad)
        else:
            self._cont = [sid, flags & F.END_STREAM, [data[p:stop]], size, bad]

    def _on_continuation(self, data: bytes, p: int, stop: int, flags: int, sid: int) -> None:
        cont = self._cont
        if cont is None or cont[0] != sid:
            raise F.H2Error(F.PROTOCOL_ERROR, "CONTINUATION without a HEADERS frame before it on this stream")
        if stop == p and not flags & F.END_HEADERS:
            raise F.H2Error(F.ENHANCE_YOUR_CALM, "an empty CONTINUATION frame that does not end the header block")
        parts = cont[2]
        parts.append(data[p:stop])
        if len(parts) > G.MAX_FRAGMENTS:
            raise F.H2Error(F.ENHANCE_YOUR_CALM, f"a header block in more than {G.MAX_FRAGMENTS} frames")
        cont[3] += stop - p
        if cont[3] > self.lim.max_header_block:
            raise F.H2Error(F.ENHANCE_YOUR_CALM, f"a header block larger than {self.lim.max_header_block} bytes")
        if flags & F.END_HEADERS:
            self._cont = None
            self._headers_done(sid, b"".join(parts), cont[1], cont[4])

    def _decode(self, block: bytes) -> Any:
        """The request head a header block means (HPACK-decoded, or remembered)."""
        head = self._heads.get(block)
        if head is not None:
            return head
        dec = self.decoder
        gen = dec.generation
        try:
            fields, oversize = dec.decode(block)
        except HpackFlood as exc:
            raise F.H2Error(F.ENHANCE_YOUR_CALM, f"HPACK: {exc}") from None
        except HpackError as exc:
            raise F.H2Error(F.COMPRESSION_ERROR, f"HPACK: {exc}") from None
        head = self.app.head(fields, oversize)
        heads = self._heads
        if dec.generation != gen:
            heads.clear()  # indices moved: a remembered block may mean something else now
            self._heads_bytes = 0
        elif head.error is None and len(block) <= HEAD_CACHE_BLOCK:  # only blocks that open a valid call
            if self._heads_bytes + len(block) > HEAD_CACHE_BYTES:
                heads.clear()
                self._heads_bytes = 0
            heads[block] = head
            self._heads_bytes += len(block)
        return head

    def _headers_done(self, sid: int, block: bytes, end_stream: int, bad: bool = False) -> None:
        st = self.streams.get(sid)
        if st is not None:  # trailers from the client (they end its side of the stream)
            self._decode(block)
            if bad:
                raise F.StreamError(sid, F.PROTOCOL_ERROR, "a stream cannot depend on itself")
            if not st.recv_open:
                raise F.StreamError(sid, F.STREAM_CLOSED, "HEADERS after END_STREAM")
            if not end_stream:
                raise F.StreamError(sid, F.PROTOCOL_ERROR, "trailing HEADERS without END_STREAM")
            st.recv_open = False
            held = st.held
            self.app.data(self, st, b"", True)
            if held > st.held:
                self.consumed(held - st.held)
            return
        if not sid & 1:
            raise F.H2Error(F.PROTOCOL_ERROR, f"a client stream id must be odd, got {sid}")
        if sid <= self.last_sid:
            self._decode(block)  # keeps the HPACK table in step
            if sid in self._reset_sent:
                return
            if sid < self.last_sid:  # RFC 9113 5.1.1: a new stream id must be above every one opened before
                raise F.H2Error(F.PROTOCOL_ERROR, f"stream id {sid} is lower than {self.last_sid}, opened before")
            raise F.H2Error(F.STREAM_CLOSED, f"HEADERS on closed stream {sid}")
        self.last_sid = sid
        head = self._decode(block)
        if bad:
            raise F.StreamError(sid, F.PROTOCOL_ERROR, "a stream cannot depend on itself")
        if self.goaway_sent or len(self.streams) >= self.lim.max_streams:
            self._write(F.rst_stream(sid, F.REFUSED_STREAM))
            self._note_reset(sid)
            return
        self.accepted_sid = sid
        self.started += 1
        st = Stream(sid, self.peer_window, self.lim.stream_window)
        if end_stream:
            st.recv_open = False
        self.streams[sid] = st
        self.app.start(self, st, head, end_stream)
