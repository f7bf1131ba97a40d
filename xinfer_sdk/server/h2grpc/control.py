"""The control frames of an ``H2Connection`` (WINDOW_UPDATE, PING, SETTINGS, RST_STREAM, GOAWAY): the client's
windows and settings, and the flood counters that apply to them (guard.py has the thresholds).

SETTINGS: each frame is reduced to the last value of each identifier, so an INITIAL_WINDOW_SIZE change walks
the open streams once per frame, whatever the number of entries.
"""

from __future__ import annotations

import logging
from typing import Any

from . import frames as F
from . import guard as G

log = logging.getLogger("xinfer_sdk.server.h2grpc.connection")


class H2Control:
    """Mixed into ``H2Connection`` (which owns the attributes used here)."""

    streams: dict
    app: Any

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
        if flags & F.ACK:
            if self.drain_until is not None:
                self._ping_acked(data[p:stop])
            return
        self.n_ping += 1
        if self.n_ping > G.PINGS:
            self._calm("PINGs without a call")
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
        self.n_settings += 1
        if self.n_settings > G.SETTINGS_FRAMES:
            self._calm("SETTINGS frames")
        values = F.parse_settings(data[p:stop])  # the last value of each identifier counts (RFC 9113 6.5.3)
        value = values.get(F.INITIAL_WINDOW_SIZE)
        if value is not None:
            if value > F.MAX_WINDOW:
                raise F.H2Error(F.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1")
            delta = value - self.peer_window
            self.peer_window = value
            if delta:
                for st in self.streams.values():
                    st.window += delta
                    if st.window > F.MAX_WINDOW:
                        raise F.H2Error(F.FLOW_CONTROL_ERROR, "a stream window above 2^31-1")
        value = values.get(F.MAX_FRAME_SIZE)
        if value is not None:
            if not F.DEFAULT_MAX_FRAME <= value <= F.MAX_FRAME_LIMIT:
                raise F.H2Error(F.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
            self.peer_max_frame = value
        if values.get(F.ENABLE_PUSH, 0) > 1:
            raise F.H2Error(F.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH must be 0 or 1")
        if F.HEADER_TABLE_SIZE in values:
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
        held = st.held
        self.app.reset(self, st)
        if held:
            self.consumed(held)
        self.n_resets += 1  # a stream we had not answered yet (answered ones are no longer in self.streams)
        if self.n_resets > G.CLIENT_RESETS and self.n_resets > G.RESET_SHARE * (self.started - self.win_started):
            self._calm("streams reset by the client (rapid reset)")

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
