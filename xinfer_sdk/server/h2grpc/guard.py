"""What keeps one HTTP/2 connection from holding the server: flood counters, timeouts, the drain's two-step
GOAWAY and the per-read work budget (mixed into ``H2Connection``; the server's sweep calls ``tick`` every
``SWEEP`` seconds with a coarse clock, so no timer is armed per frame or per stream).

Flood counters (nghttp2-style, per connection, per ``WINDOW`` seconds; over a threshold the connection gets
GOAWAY(ENHANCE_YOUR_CALM)): PINGs with no answer of ours in between (a client's keepalive and BDP pings stay
far below), SETTINGS frames, empty frames (DATA without END_STREAM, HEADERS/CONTINUATION fragments, unknown
types), PRIORITY frames, client RST_STREAMs of streams we had not answered (rapid reset, CVE-2023-44487, also
when interleaved with normal calls) and stream errors the client provokes. CONTINUATION is capped per header
block (``MAX_FRAGMENTS``; an empty non-final one is refused at once), fields per block in hpack.py.

Timers (``tick``): the client preface + first SETTINGS within ``header_timeout``; a connection with no open
stream for ``idle_timeout`` gets GOAWAY(NO_ERROR) and is closed; a unary request must arrive whole within
``body_timeout`` of its HEADERS (as first seen by the sweep), a ModelStreamInfer message within ``body_timeout`` of its first byte, and any
request within its ``grpc-timeout`` (DEADLINE_EXCEEDED trailers + RST_STREAM(CANCEL)); an answer that waits for
the client's window longer than ``body_timeout`` is dropped (RST_STREAM(CANCEL)).
"""

from __future__ import annotations

import logging
from typing import Any

from . import frames as F

log = logging.getLogger("xinfer_sdk.server.h2grpc.connection")

SWEEP = 0.5  # seconds between the server's timer sweeps (timeouts fire up to this late or early)
WINDOW = 10.0  # seconds a flood counter accumulates before it starts again
PINGS = 100  # PINGs in a window with no answer (HEADERS) of ours in between
SETTINGS_FRAMES = 100  # SETTINGS frames (not ACKs) in a window
EMPTY_FRAMES = 1000  # zero-length DATA (without END_STREAM), HEADERS, CONTINUATION, unknown frames in a window
PRIORITY_FRAMES = 1000  # PRIORITY frames in a window (gRPC clients send none)
CLIENT_RESETS = 200  # RST_STREAM from the client for streams we had not answered, in a window ...
RESET_SHARE = 0.25  # ... when they are also more than this share of the streams opened in the window: a busy client
#   whose deadlines and cancels reset a few % of 1,000 calls/s is not an attacker; the rapid-reset pattern (every
#   stream reset) and the interleaved one (one normal call per cancel, 50 %) are
STREAM_ERRORS = 1000  # stream errors the client provoked (RST_STREAM from us) in a window
MAX_FRAGMENTS = 64  # CONTINUATION frames in one header block
WORK_BUDGET = 256 << 10  # bytes of frames handled in one read before other connections get the loop
DRAIN_PING = b"xdrain\x00\x01"
DRAIN_ACK_WAIT = 1.0  # the drain's second GOAWAY goes out when its PING is answered, or after this
LINGER = 0.25  # a connection refused at once (connection cap) reads the client's first bytes this long
LATE_WAIT = 1.0  # a connection arriving during the drain is closed after this when it sends no call
MAX_SID = (1 << 31) - 1


class H2Guard:
    """Mixed into ``H2Connection`` (which owns the attributes used here)."""

    server: Any
    lim: Any
    streams: dict

    def _guard_init(self, now: float) -> None:
        self.made_at = now
        self.win_start = now
        self.n_ping = self.n_settings = self.n_empty = self.n_priority = self.n_resets = self.n_errors = 0
        self.win_started = 0  # ``started`` (streams accepted) when the window began
        self.idle_since: float | None = now
        self.seen_started = 0
        self.drain_until: float | None = None  # the drain's first GOAWAY is out: the second one is due
        self._yielding = False

    def _calm(self, what: str) -> None:
        raise F.H2Error(F.ENHANCE_YOUR_CALM, f"too many {what} in {WINDOW:g} s")

    def _new_window(self, now: float) -> None:
        self.win_start = now
        self.win_started = self.started
        self.n_ping = self.n_settings = self.n_empty = self.n_priority = self.n_resets = self.n_errors = 0

    # -- work budget --------------------------------------------------------------------------------------
    def _yield_loop(self) -> None:
        """A read handled a lot of frames: let the other connections have the loop before reading again."""
        if not self._yielding and not self._read_paused and not self.closed:
            self._yielding = True
            self.transport.pause_reading()
            self.loop.call_soon(self._end_yield)

    def _end_yield(self) -> None:
        self._yielding = False
        if not self._read_paused and not self.closed:
            self.transport.resume_reading()

    # -- timers -------------------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """The server's sweep: timeouts of the connection and its streams."""
        if self.closed:
            return
        lim = self.lim
        if now - self.win_start >= WINDOW:
            self._new_window(now)
        if self._settings_due:
            if now - self.made_at >= lim.header_timeout:
                self._timeout(f"no HTTP/2 preface and SETTINGS within {lim.header_timeout:g} s")
            return
        if self.drain_until is not None and now >= self.drain_until:
            self.drain_until = None
            self.goaway()
            if self.closed:
                return
        expires = self.expires
        if expires is not None and now >= expires:
            if not self.goaway_sent:
                self.goaway()
                self.expires = now + self.server.age_grace
            else:
                self.abort()
            return
        streams = self.streams
        if not streams:
            if self.started != self.seen_started or self.idle_since is None:
                self.seen_started = self.started
                self.idle_since = now
            elif now - self.idle_since >= lim.idle_timeout:
                log.debug("HTTP/2: closing a connection idle for %g s", lim.idle_timeout)
                self._timeout("")
            return
        self.idle_since = None
        body = lim.body_timeout
        expire = self.app.expire
        for st in list(streams.values()):
            if st.call is not None:
                if st.t0 is None and st.queue is None:  # a unary request: timed from when the sweep first sees it
                    st.t0 = now
                if st.deadline is not None and now >= st.deadline:
                    expire(self, st, "deadline exceeded while the request was still arriving")
                elif st.t0 is not None and now - st.t0 >= body:
                    expire(self, st, f"the request did not arrive within {body:g} s (the server's --body-timeout)")
            elif st.parked is not None and now - st.parked >= body:
                self.reset_stream(st.sid, F.CANCEL, f"the client gave no window for {body:g} s")
        if self._out:
            self._flush()

    def _timeout(self, why: str) -> None:
        """GOAWAY(NO_ERROR) and close (abort when the client does not even read)."""
        if why:
            log.debug("HTTP/2: closing a connection: %s", why)
        if not self.goaway_sent:
            self.goaway_sent = True
            self._write(F.goaway(self.accepted_sid, F.NO_ERROR, why.encode()[:200]))
        self._flush()
        self.closed = True
        if self._write_paused:
            self.transport.abort()
        else:
            self.transport.close()

    # -- refusals and the drain -------------------------------------------------------------------------------
    def refuse(self, debug: bytes) -> None:
        """Our SETTINGS + GOAWAY(0, NO_ERROR, debug) at once; closed after a short linger (so the client's first
        bytes are read and it sees the GOAWAY, not a reset). Beyond the connection cap."""
        self.goaway_sent = True
        self.close_when_idle = True
        self._write(F.goaway(0, F.NO_ERROR, debug))
        self._flush()
        self.loop.call_later(LINGER, self.abort_quietly)

    def late(self) -> None:
        """A connection that arrives during the drain: the calls it sends at once are answered (UNAVAILABLE by the
        draining service, a clear and fast failure), then GOAWAY(last stream) and close; one that sends none is
        closed after LATE_WAIT. (A GOAWAY(0) at once makes gRPC clients retry the call on a new connection, again
        and again, until the listener closes.)"""
        self.close_when_idle = True
        self.loop.call_later(LATE_WAIT, self._close_if_idle)

    def abort_quietly(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def drain(self) -> None:
        """The drain's graceful two-step GOAWAY (as nghttp2 / gRPC): GOAWAY(2^31-1, NO_ERROR) + PING now; the final
        GOAWAY(last processed stream) when the PING is answered or after DRAIN_ACK_WAIT. Open calls finish."""
        if self.closed or self.goaway_sent or self.drain_until is not None:
            return
        self._write(F.goaway(MAX_SID, F.NO_ERROR) + F.frame(F.PING, 0, 0, DRAIN_PING))
        self.drain_until = self.server.now + DRAIN_ACK_WAIT
        if not self._reading:
            self._flush()

    def _ping_acked(self, opaque: bytes) -> None:
        if opaque == DRAIN_PING and self.drain_until is not None:
            self.drain_until = None
            self.goaway()
