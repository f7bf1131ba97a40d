"""The HTTP/1.1 listener: the listening socket (a ``Listener``: connection cap, reset-free close), the open
connections (for drain) and the one sweep task per server that enforces their deadlines."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .http import Connection
from .http_wire import _LINGER, LINGER, TICK
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
        """Close every connection once idle. A keep-alive client may have a request on the wire when its last
        answer (sent before the drain began, so without 'Connection: close') reached it: connections first stay
        open for ``linger`` seconds, answering such requests 503 + 'Connection: close', so none is dropped
        unanswered; then the idle ones are closed."""
        await self.close_listener()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + linger
        while loop.time() < deadline and any(not c.closed for c in self.connections):
            await asyncio.sleep(0.01)
        for c in list(self.connections):
            if c.phase == _LINGER:
                c.transport.abort()
            else:
                c.close_when_idle()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
