"""The native gRPC endpoint: a listener on the server's event loop whose connections are ``H2Connection``s
feeding one ``GrpcCalls`` (``--grpc-impl native``, the default).

``stop(grace)`` closes the listener, sends GOAWAY(NO_ERROR, last stream) on every connection, lets the open
calls finish for up to ``grace`` seconds, then closes what is left (queued requests are withdrawn).

``max_connection_age`` (gRPC's MAX_CONNECTION_AGE): a connection older than that, +-10 % jitter, gets a graceful
GOAWAY; its open calls finish (or are cut after 30 s), and the client reconnects, re-resolving DNS. Behind a
headless Service, that is how replicas added by an autoscaler start receiving traffic from long-lived clients.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from ..service import Service
from .calls import GrpcCalls
from .connection import H2Connection, Limits

log = logging.getLogger(__name__)
_POLL = 0.01
AGE_GRACE = 30.0  # after an age GOAWAY, calls still open this long are cut (gRPC's MAX_CONNECTION_AGE_GRACE)


class NativeGrpcServer:
    def __init__(self, service: Service, *, max_message: int, limits: Limits | None = None,
                 max_connection_age: float | None = None, net: Any = None, budget: Any = None):
        from ..limits import RequestBudget, ServerLimits

        self.service = service
        self.net = net if net is not None else ServerLimits()  # timeouts and caps shared with the HTTP port
        self.budget = budget if budget is not None else RequestBudget(self.net.max_buffered)
        self.max_connection_age = max_connection_age
        self.accepted = 0  # connections accepted so far
        self._ager: asyncio.Task | None = None
        self.limits = limits or Limits(max_message=int(max_message))
        self.calls = GrpcCalls(service, max_message=self.limits.max_message,
                               max_header_list=self.limits.max_header_list)
        self.connections: set[H2Connection] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: self._connection(loop), host, port, reuse_address=True,
                                                backlog=1024)
        if self.max_connection_age:
            self._ager = loop.create_task(self._age_connections(float(self.max_connection_age)))
        return self._server.sockets[0].getsockname()[1]

    def _connection(self, loop: asyncio.AbstractEventLoop) -> H2Connection:
        c = H2Connection(self, self.calls, self.limits, loop)
        self.accepted += 1
        c.expires = loop.time() + self.max_connection_age * random.uniform(0.9, 1.1) if self.max_connection_age \
            else None
        return c

    async def _age_connections(self, age: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, age / 4))
            now = loop.time()
            for c in list(self.connections):
                if c.expires is not None and now >= c.expires:
                    if not c.goaway_sent:
                        c.goaway()
                        c.expires = now + AGE_GRACE
                    else:
                        c.abort()

    def pending_answers(self) -> int:
        """Calls still open on any connection."""
        return sum(len(c.streams) for c in self.connections)

    async def stop(self, grace: float | None) -> None:
        if self._ager is not None:
            self._ager.cancel()
        if self._server is not None:
            self._server.close()
        for c in list(self.connections):
            c.goaway()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (grace or 0.0)
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(_POLL)
        for c in list(self.connections):
            c.abort()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except (asyncio.TimeoutError, Exception):  # pragma: no cover - stuck sockets are not our problem
                pass
