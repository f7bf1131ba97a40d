"""The answering half of an HTTP/1.1 connection (``Connection`` in http.py): answers written in request order, the
lingering close after an error, the connection's deadline (checked by the server's sweep) and the reasons its
reading is paused (answers pending, write backpressure, yielding to other connections)."""

from __future__ import annotations

import logging

from .http_wire import (
    _BODY,
    _BUSY,
    _HEAD,
    _IDLE,
    _LINGER,
    _PENDING,
    _WRITE,
    ERROR_LINGER,
    INF,
    MAX_PENDING,
    Slot,
    error_response,
)
from .limits import flag

log = logging.getLogger(__name__)


class HttpOutput:
    """Mixin of ``Connection``: needs its attributes (``transport``, ``pending``, ``server``, ``phase``, ...)."""

    __slots__ = ()

    # -- answers ----------------------------------------------------------------------------------------
    def _answer(self, data: bytes, close: bool) -> None:
        """Answer the request just parsed (synchronously)."""
        if self.pending:
            slot = Slot()
            self.pending.append(slot)
            self.finish(slot, data, close)
            return
        if self.closed:
            return
        self.transport.write(data)
        if close:
            self._close()
        elif self.phase == _BUSY:
            self.phase = _IDLE
            self.deadline = self.server.clock + self.keepalive_timeout

    def begin(self) -> Slot:
        """Reserve the response position of the request just parsed (answered later with ``finish``)."""
        slot = Slot()
        self.pending.append(slot)
        return slot

    def finish(self, slot: Slot, data: bytes, close: bool = False) -> None:
        slot.data = data
        slot.close = close
        if self.closed:
            return
        pending = self.pending
        write = self.transport.write
        while pending and pending[0].data is not None:
            s = pending.popleft()
            write(s.data)
            if s.close:
                self._close()
                return
        if self._hold & _PENDING and len(pending) <= MAX_PENDING // 2:
            self._hold_off(_PENDING)
        if not pending:
            if self.closing:
                self._close()
            elif self.phase == _BUSY:
                self.phase = _IDLE
                self.deadline = self.server.clock + self.keepalive_timeout

    def _fatal(self, status: int, message: str, extra: bytes = b"") -> None:
        """The byte stream cannot be trusted any more: answer (after what is pending) and close."""
        self.closing = True
        self._error_close = True
        self._release_body()
        data = error_response(status, message, close=True, extra=extra)
        if self.pending:
            self.deadline = INF  # the answers go out first; the close then lingers
            slot = Slot()
            self.pending.append(slot)
            self.finish(slot, data, close=True)
        elif not self.closed:
            self.transport.write(data)
            self._close()

    def _close(self, linger: float = ERROR_LINGER) -> None:
        """Close after what was written. After an error answer the client may still be sending: half-close and
        discard its input for up to ``linger`` seconds, so the answer is not destroyed by a TCP reset."""
        if self.closed:
            return
        self.closed = self.closing = True
        if not self._error_close:
            self.transport.close()
            return
        self.phase = _LINGER
        self.deadline = self.server.clock + linger
        try:
            if self._hold:
                self._hold = 0
                self.transport.resume_reading()
            self.transport.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            self.transport.close()

    def close_when_idle(self) -> None:
        """Used by drain: close now if nothing is pending, else after the pending answers."""
        self.closing = True
        if not self.pending:
            self._close()

    # -- deadlines and reading pauses -----------------------------------------------------------------------
    def _arm(self) -> None:
        """Set the deadline of the current phase, counted from now."""
        if self.phase == _LINGER:
            return
        clock = self.server.clock
        if self._hold & _WRITE:  # answers the client does not read
            self.deadline = self.write_deadline
        elif self._hold:  # paused by us (answers pending from the model): no client deadline
            self.deadline = INF
        elif self.phase == _HEAD:
            self.deadline = clock + self.header_timeout
        elif self.phase == _BODY:
            self.deadline = clock + self.body_timeout
        elif self.phase == _IDLE:
            self.deadline = clock + self.keepalive_timeout
        else:
            self.deadline = INF

    def expire(self) -> None:
        """Called by the sweep once ``deadline`` has passed (the hot path sets deadlines without looking at pauses:
        they are sorted out here)."""
        if self._hold & _WRITE and self.write_deadline <= self.server.clock:  # answers not read
            self.transport.abort()
            return
        if self.deadline > self.server.clock:  # only the write deadline was due, and it is over
            return
        if self.phase == _LINGER:  # lingering close over
            self.transport.abort()
        elif self._hold:  # paused (by us, or the client does not read yet): the client's deadlines wait
            self._arm()
        elif self.phase == _IDLE:
            self._close()  # keep-alive (or fresh connection) idle: close quietly
        elif self.phase == _HEAD:
            self._fatal(408, f"the request line and headers did not arrive within {self.header_timeout:g} s "
                             f"({flag('header_timeout')}); send the whole request at once")
        elif self.phase == _BODY:
            self._fatal(408, f"the request body did not arrive within {self.body_timeout:g} s after its headers "
                             f"({flag('body_timeout')}); send the body at once")
        else:
            self.deadline = INF

    def _hold_on(self, why: int) -> None:
        if not self._hold and not self.closed:
            self.transport.pause_reading()
        self._hold |= why
        self._arm()

    def _hold_off(self, why: int) -> None:
        if not self._hold & why:
            return
        self._hold &= ~why
        self._arm()
        if not self._hold and not self.closed:
            if self._unread:
                self.server.loop.call_soon(self._resume)  # not from inside finish/transport callbacks
            else:
                self.transport.resume_reading()

    def _resume(self) -> None:
        if self._hold or self.closed:
            return
        data, self._unread = self._unread, b""
        self.data_received(data)
        if not self._hold and not self._unread and not self.closed:
            self.transport.resume_reading()
