"""The server side of one HTTP/2 connection (RFC 9113) as gRPC uses it, as an asyncio Protocol: the reading
half (the writing half, ``H2Output``, is in output.py).

Reads: the client preface, then frames parsed in place from each read (a partial frame waits in a
bytearray). Header blocks (HEADERS + CONTINUATION) go through HPACK; a block that leaves the dynamic table
unchanged is remembered with what it meant, so a client repeating its headers (gRPC clients index them
all) costs one dict lookup per request. DATA is counted against our windows, which are returned as the
bytes arrive (WINDOW_UPDATE once half of a window is used). The call layer (``app``) sees ``head`` (what a
header block means), ``start``, ``data`` and ``reset`` per stream, and answers with ``respond``,
``send_headers`` and ``send_message``.

Errors: a connection error sends GOAWAY(last stream, code) and closes; a stream error sends RST_STREAM and
the connection goes on. Limits: concurrent streams (REFUSED_STREAM beyond), frame size, header block size,
buffered request bytes, and reading pauses while the client does not read its answers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import frames as F
from .hpack import Decoder, HpackError
from .output import H2Output
from .stream import Limits, Stream

__all__ = ["H2Connection", "Limits", "Stream"]

log = logging.getLogger(__name__)

RAPID_RESETS = 1000  # streams a client may cancel before we look at the share it cancels


class H2Connection(H2Output, asyncio.Protocol):
    def __init__(self, server: Any, app: Any, limits: Limits, loop: asyncio.AbstractEventLoop):
        self.server = server
        self.app = app
        self.lim = limits
        self.loop = loop
        self.transport: Any = None
        self.streams: dict[int, Stream] = {}
        self.decoder = Decoder(4096, limits.max_header_list)
        self._heads: dict[bytes, Any] = {}  # header block -> app.head(...) while the HPACK table is unchanged
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
        self._client_resets = 0  # of them, reset by the client before we answered ("rapid reset" guard)
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
        self._conn_update_at = limits.connection_window // 2
        self._stream_update_at = limits.stream_window // 2

    # -- asyncio ----------------------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.connections.add(self)
        lim = self.lim
        transport.write(F.settings({F.MAX_CONCURRENT_STREAMS: lim.max_streams,
                                    F.INITIAL_WINDOW_SIZE: lim.stream_window, F.MAX_FRAME_SIZE: lim.max_frame,
                                    F.MAX_HEADER_LIST_SIZE: lim.max_header_list})
                        + F.window_update(0, lim.connection_window - F.DEFAULT_WINDOW))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
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
                    if sid == 0:
                        raise F.H2Error(F.PROTOCOL_ERROR, "PRIORITY on stream 0")
                    if stop - p != 5:
                        raise F.StreamError(sid, F.FRAME_SIZE_ERROR, "PRIORITY frame must be 5 bytes")
                elif ftype == F.GOAWAY:
                    self._on_goaway(data, p, stop, sid)
                elif ftype == F.PUSH_PROMISE:
                    raise F.H2Error(F.PROTOCOL_ERROR, "a client must not send PUSH_PROMISE")
                # unknown frame types are ignored (RFC 9113 5.5)
            except F.StreamError as exc:
                self.reset_stream(exc.sid, exc.code, str(exc))
            if self.closed:
                return end
        self._need = 9
        return pos

    def _on_data(self, data: bytes, p: int, stop: int, flags: int, sid: int) -> None:
        length = stop - p
        self.recv_window -= length
        if self.recv_window < 0:
            raise F.H2Error(F.FLOW_CONTROL_ERROR, "the client sent more DATA than the connection window allows")
        self.recv_unacked += length
        if self.recv_unacked >= self._conn_update_at:
            self._write(F.window_update(0, self.recv_unacked))
            self.recv_window += self.recv_unacked
            self.recv_unacked = 0
        if sid == 0:
            raise F.H2Error(F.PROTOCOL_ERROR, "DATA on stream 0")
        st = self.streams.get(sid)
        if st is None:
            if sid > self.last_sid or not sid & 1:
                raise F.H2Error(F.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            return  # a stream already answered or reset: its late DATA is dropped (but counted above)
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
        else:
            st.recv_unacked += length
            if st.recv_unacked >= self._stream_update_at:
                self._write(F.window_update(sid, st.recv_unacked))
                st.recv_window += st.recv_unacked
                st.recv_unacked = 0
        self.app.data(self, st, memoryview(data)[p:stop], end)  # no copy: ``data`` is immutable bytes

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
        if flags & F.END_HEADERS:
            self._headers_done(sid, data[p:stop], flags & F.END_STREAM, bad)
        else:
            self._cont = [sid, flags & F.END_STREAM, [data[p:stop]], stop - p, bad]

    def _on_continuation(self, data: bytes, p: int, stop: int, flags: int, sid: int) -> None:
        cont = self._cont
        if cont is None or cont[0] != sid:
            raise F.H2Error(F.PROTOCOL_ERROR, "CONTINUATION without a HEADERS frame before it on this stream")
        cont[2].append(data[p:stop])
        cont[3] += stop - p
        if cont[3] > self.lim.max_header_block:
            raise F.H2Error(F.ENHANCE_YOUR_CALM, f"a header block larger than {self.lim.max_header_block} bytes")
        if flags & F.END_HEADERS:
            self._cont = None
            self._headers_done(sid, b"".join(cont[2]), cont[1], cont[4])

    def _decode(self, block: bytes) -> Any:
        """The request head a header block means (HPACK-decoded, or remembered)."""
        head = self._heads.get(block)
        if head is not None:
            return head
        dec = self.decoder
        gen = dec.generation
        try:
            fields, oversize = dec.decode(block)
        except HpackError as exc:
            raise F.H2Error(F.COMPRESSION_ERROR, f"HPACK: {exc}") from None
        head = self.app.head(fields, oversize)
        heads = self._heads
        if dec.generation != gen:
            heads.clear()  # indices moved: a remembered block may mean something else now
        elif len(block) <= 4096:
            if len(heads) >= 256:
                heads.clear()
            heads[block] = head
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
            self.app.data(self, st, b"", True)
            return
        if not sid & 1:
            raise F.H2Error(F.PROTOCOL_ERROR, f"a client stream id must be odd, got {sid}")
        if sid <= self.last_sid:
            self._decode(block)  # keeps the HPACK table in step
            if sid in self._reset_sent:
                return
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

    def _on_window_update(self, data: bytes, p: int, stop: int, sid: int) -> None:
        if stop - p != 4:
            raise F.H2Error(F.FRAME_SIZE_ERROR, "WINDOW_UPDATE must be 4 bytes")
        inc = F.u32(data, p) & 0x7FFFFFFF
        if sid == 0:
            if inc == 0:
                raise F.H2Error(F.PROTOCOL_ERROR, "connection WINDOW_UPDATE of 0")
            self.send_window += inc
            if self.send_window > F.MAX_WINDOW:
                raise F.H2Error(F.FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            if self._blocked:
                self._resume_blocked()
            return
        st = self.streams.get(sid)
        if st is None:
            if sid > self.last_sid or not sid & 1:
                raise F.H2Error(F.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return
        if inc == 0:
            raise F.StreamError(sid, F.PROTOCOL_ERROR, "stream WINDOW_UPDATE of 0")
        st.window += inc
        if st.window > F.MAX_WINDOW:
            raise F.StreamError(sid, F.FLOW_CONTROL_ERROR, "stream window above 2^31-1")
        if st.out is not None:
            self._push(st)

    def _on_ping(self, data: bytes, p: int, stop: int, flags: int, sid: int) -> None:
        if sid != 0:
            raise F.H2Error(F.PROTOCOL_ERROR, "PING on a stream")
        if stop - p != 8:
            raise F.H2Error(F.FRAME_SIZE_ERROR, "PING must be 8 bytes")
        if not flags & F.ACK:
            self._write(F.ping_ack(data[p:stop]))

    def _on_settings(self, data: bytes, p: int, stop: int, flags: int, sid: int) -> None:
        if sid != 0:
            raise F.H2Error(F.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & F.ACK:
            if stop != p:
                raise F.H2Error(F.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if (stop - p) % 6:
            raise F.H2Error(F.FRAME_SIZE_ERROR, "SETTINGS payload is not a multiple of 6 bytes")
        for key, value in F.parse_settings(data[p:stop]):
            if key == F.INITIAL_WINDOW_SIZE:
                if value > F.MAX_WINDOW:
                    raise F.H2Error(F.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1")
                delta = value - self.peer_window
                self.peer_window = value
                for st in self.streams.values():
                    st.window += delta
                    if st.window > F.MAX_WINDOW:
                        raise F.H2Error(F.FLOW_CONTROL_ERROR, "a stream window above 2^31-1")
            elif key == F.MAX_FRAME_SIZE:
                if not F.DEFAULT_MAX_FRAME <= value <= F.MAX_FRAME_LIMIT:
                    raise F.H2Error(F.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
                self.peer_max_frame = value
            elif key == F.ENABLE_PUSH:
                if value > 1:
                    raise F.H2Error(F.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH must be 0 or 1")
            elif key == F.HEADER_TABLE_SIZE:
                self._table_update = True  # we never index, so an empty table (size update 0) always fits
        self._write(F.SETTINGS_ACK)
        if self._blocked:
            self._resume_blocked()

    def _on_rst_stream(self, data: bytes, p: int, stop: int, sid: int) -> None:
        if stop - p != 4:
            raise F.H2Error(F.FRAME_SIZE_ERROR, "RST_STREAM must be 4 bytes")
        if sid == 0:
            raise F.H2Error(F.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        st = self.streams.pop(sid, None)
        if st is None:
            if sid > self.last_sid or not sid & 1:
                raise F.H2Error(F.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
            return
        self._drop(st)
        self._note_reset(sid)
        self.app.reset(self, st)
        self._client_resets += 1
        if self._client_resets > RAPID_RESETS and self._client_resets * 2 > self.started:
            raise F.H2Error(F.ENHANCE_YOUR_CALM, "the client resets most of its streams (rapid reset)")

    def _on_goaway(self, data: bytes, p: int, stop: int, sid: int) -> None:
        if sid != 0:
            raise F.H2Error(F.PROTOCOL_ERROR, "GOAWAY on a stream")
        if stop - p < 8:
            raise F.H2Error(F.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
        self.goaway_received = True
        code = F.u32(data, p + 4)
        if code != F.NO_ERROR:
            log.debug("HTTP/2: client GOAWAY code %d: %r", code, data[p + 8:stop][:200])
        self.close_when_idle = True
        self._close_if_idle()
