"""The native gRPC endpoint: a ``Listener`` on the server's event loop whose connections are ``H2Connection``s
feeding one ``GrpcCalls`` (``--grpc-impl native``, the default).

Limits come from the server's ``ServerLimits`` (timeouts, connection cap, the server-wide ``RequestBudget`` of
request bytes, shared with HTTP); the per-connection HTTP/2 ``Limits`` are built from them (``h2=`` overrides).
One sweep task per server runs every ``guard.SWEEP`` seconds: it keeps the coarse clock (``now``) the
connections read instead of the system clock, and calls each connection's ``tick`` (timeouts, max age, the
drain's second GOAWAY). No timer is armed per frame or per stream.

Shutdown, in the runner's order: ``begin_drain()`` (graceful two-step GOAWAY on every connection; a connection
that arrives later gets SETTINGS + GOAWAY(0) at once), ``close_listener()`` (seals the port, serves the backlog),
``stop(grace)`` (GOAWAY, open calls finish for up to ``grace`` seconds, then what is left is closed).

``max_connection_age`` (gRPC's MAX_CONNECTION_AGE): a connection older than that, +-10 % jitter, gets a graceful
GOAWAY; its open calls finish (or are cut after 30 s), and the client reconnects, re-resolving DNS. Behind a
headless Service, that is how replicas added by an autoscaler start receiving traffic from long-lived clients.
"""

from __future__ import annotations

import asyncio
import logging
import random

from ..limits import RequestBudget, ServerLimits
from ..listener import Listener
from ..service import Service
from .calls import GrpcCalls
from .connection import H2Connection, Limits
from .guard import SWEEP

log = logging.getLogger(__name__)
_POLL = 0.01
AGE_GRACE = 30.0  # after an age GOAWAY, calls still open this long are cut (gRPC's MAX_CONNECTION_AGE_GRACE)


class NativeGrpcServer:
    def __init__(self, service: Service, *, max_message: int, net: ServerLimits | None = None,
                 budget: RequestBudget | None = None, max_connection_age: float | None = None,
                 limits: ServerLimits | Limits | None = None, h2: Limits | None = None):
        if isinstance(limits, Limits):  # the per-connection limits given directly
            h2 = limits
        elif limits is not None:
            net = limits
        self.net = limits = net or ServerLimits()
        self.service = service
        self.max_connection_age = max_connection_age
        self.age_grace = AGE_GRACE
        self.accepted = 0  # connections accepted so far
        self.h2 = h2 or Limits(max_message=int(max_message), header_timeout=limits.header_timeout,
                               body_timeout=limits.body_timeout, idle_timeout=limits.idle_timeout)
        self.limits = self.h2  # what tests and older callers know it as
        self.budget = budget if budget is not None else RequestBudget(limits.max_buffered)
        self.calls = GrpcCalls(service, max_message=self.h2.max_message, max_header_list=self.h2.max_header_list,
                               budget=self.budget)
        self.connections: set[H2Connection] = set()
        self.listener = Listener("gRPC", limits.max_connections)
        self.draining = False
        self.now = 0.0  # the sweep's clock (loop time, updated every SWEEP seconds)
        self._sweeper: asyncio.Task | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.now = loop.time()
        bound = await self.listener.start(lambda: self._connection(loop), host, port)
        self._sweeper = loop.create_task(self._sweep(loop))
        return bound

    def _connection(self, loop: asyncio.AbstractEventLoop) -> H2Connection:
        c = H2Connection(self, self.calls, self.h2, loop)
        self.accepted += 1
        if self.max_connection_age:
            c.expires = self.now + self.max_connection_age * random.uniform(0.9, 1.1)
        return c

    # -- what connections call -------------------------------------------------------------------------------
    def admit(self) -> bool:
        return self.listener.admit()

    def release(self) -> None:
        self.listener.release()

    async def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        every = min(SWEEP, self.max_connection_age / 4) if self.max_connection_age else SWEEP
        while True:
            await asyncio.sleep(every)
            self.now = now = loop.time()
            for c in list(self.connections):
                try:
                    c.tick(now)
                except Exception:  # a bug must not stop the timers of every other connection
                    log.exception("HTTP/2: unexpected error in a connection's timers")
                    c.abort()

    def pending_answers(self) -> int:
        """Calls still open on any connection."""
        return sum(len(c.streams) for c in self.connections)

    # -- shutdown ------------------------------------------------------------------------------------------------
    def begin_drain(self) -> None:
        """Graceful two-step GOAWAY on every connection; connections that arrive from now on are refused with
        GOAWAY(0, NO_ERROR). Open calls finish."""
        self.draining = True
        for c in list(self.connections):
            c.drain()

    async def close_listener(self) -> None:
        await self.listener.close()

    async def stop(self, grace: float | None) -> None:
        self.draining = True
        await self.listener.close(quiet=0.0, max_wait=0.0)  # the drain closed it already (close_listener)
        for c in list(self.connections):
            c.goaway()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (grace or 0.0)
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(_POLL)
        for c in list(self.connections):
            c.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
