"""The HTTP/1.1 listener: the listening socket (a ``Listener``: connection cap, reset-free close), the open
connections (for drain) and the one sweep task per server that enforces their deadlines."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .http import Connection
from .http_wire import _IDLE, _LINGER, LINGER, QUIET, TICK
from .limits import RequestBudget, ServerLimits
from .listener import Listener

log = logging.getLogger(__name__)


class HttpServer:
    """Owns the listening socket (a ``Listener``: the connection cap and the reset-free close), the open
    connections (for drain) and the sweep task that enforces their deadlines."""

    def __init__(self, router: Any, *, max_body: int, limits: ServerLimits | None = None,
                 budget: RequestBudget | None = None):
        self.router = router
        self.max_body = int(max_body)
        self.limits = limits if limits is not None else ServerLimits()
        self.budget = budget if budget is not None else RequestBudget(self.limits.max_buffered)
        self.connections: set[Connection] = set()
        self.listener = Listener("http", self.limits.max_connections)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clock = 0.0  # loop time at the last sweep: deadlines are set from it (no clock read per request)
        self.refused_lingering = 0  # connections over the cap in their lingering close
        self._sweeper: asyncio.Task | None = None

    async def start(self, host: str, port: int) -> int:
        self.loop = asyncio.get_running_loop()
        self.clock = self.loop.time()
        port = await self.listener.start(lambda: Connection(self), host, port)
        self._sweeper = self.loop.create_task(self._sweep())
        return port

    async def _sweep(self) -> None:
        """Every TICK: expire the connections whose deadline has passed (one task per server, O(connections))."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK)
            now = self.clock = loop.time()
            for c in [c for c in self.connections if c.deadline <= now or c.write_deadline <= now]:
                try:
                    c.expire()
                except Exception:  # pragma: no cover - never let one connection stop the sweep
                    log.exception("HTTP: expiring a connection failed")
                    c.transport.abort()

    def pending_answers(self) -> int:
        return sum(len(c.pending) for c in self.connections)

    async def close_listener(self) -> None:
        """Drain step: seal the listening socket, serve what is left in its backlog, close it (no client reset)."""
        await self.listener.close()

    def stop_listening(self) -> None:
        """Deprecated (the drain now calls ``close_listener``): the same, in the background."""
        if self.listener.listening:
            asyncio.ensure_future(self.listener.close())

    async def close(self, linger: float = LINGER) -> None:
        """Close every connection once idle, without cutting off a request on its way. A keep-alive client whose last
        answer came before the drain (so without 'Connection: close') may send again at any moment; that request is
        answered 503 + 'Connection: close' and the client closes. So a connection is closed by us only once it has
        sent nothing and had nothing pending for QUIET seconds (a pool's idle connection), or when ``linger`` is
        over; the close itself is a lingering half-close, never a reset."""
        await self.close_listener()
        loop = asyncio.get_running_loop()
        end = loop.time() + linger
        seen: dict[Connection, tuple[int, float]] = {}  # connection -> (requests begun, quiet since)
        while True:
            now = loop.time()
            open_ = [c for c in self.connections if not c.closed]
            if not open_:
                break
            for c in open_:
                if c.pending or c.phase not in (_IDLE, _LINGER):
                    seen.pop(c, None)
                    continue
                begun, since = seen.get(c, (-1, now))
                if begun != c.begun:
                    seen[c] = (c.begun, now)
                elif now - since >= min(QUIET, linger) or now >= end:
                    c._error_close = True  # FIN, then discard what still arrives: no reset
                    c.close_when_idle()
            if now >= end:
                for c in open_:
                    if not c.closed:
                        c._error_close = True
                        c.close_when_idle()
                break
            await asyncio.sleep(0.01)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        close = getattr(self.router, "close", None)
        if close is not None:  # shared memory regions are closed with the server
            close()
