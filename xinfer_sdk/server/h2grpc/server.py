"""The native gRPC endpoint: a listener on the server's event loop whose connections are ``H2Connection``s
feeding one ``GrpcCalls`` (``--grpc-impl native``, the default).

``stop(grace)`` closes the listener, sends GOAWAY(NO_ERROR, last stream) on every connection, lets the open
calls finish for up to ``grace`` seconds, then closes what is left (queued requests are withdrawn).
"""

from __future__ import annotations

import asyncio
import logging

from ..service import Service
from .calls import GrpcCalls
from .connection import H2Connection, Limits

log = logging.getLogger(__name__)
_POLL = 0.01


class NativeGrpcServer:
    def __init__(self, service: Service, *, max_message: int, limits: Limits | None = None):
        self.service = service
        self.limits = limits or Limits(max_message=int(max_message))
        self.calls = GrpcCalls(service, max_message=self.limits.max_message,
                               max_header_list=self.limits.max_header_list)
        self.connections: set[H2Connection] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: H2Connection(self, self.calls, self.limits, loop), host,
                                                port, reuse_address=True, backlog=1024)
        return self._server.sockets[0].getsockname()[1]

    def pending_answers(self) -> int:
        """Calls still open on any connection."""
        return sum(len(c.streams) for c in self.connections)

    async def stop(self, grace: float | None) -> None:
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
