"""A listening socket the server owns from bind to close: the per-port connection cap, and a close that resets no
client.

Closing a listening socket resets every connection the kernel has already accepted into its backlog but the server
has not picked up yet: those clients completed their TCP handshake, send their request, and read
``ECONNRESET``. ``close()`` therefore first *seals* the socket (Linux: a socket filter that drops every new SYN, so no
further handshake starts, while one already under way completes into the backlog; the client's SYN is
retransmitted after about 1 s and then gets connection refused,
which no client library mistakes for a lost request), then keeps accepting until the backlog is empty, and only then
closes. Connections picked up that way are served like any other (during a drain: 503 + ``Connection: close``).
Elsewhere the seal is a no-op and the backlog is drained the same way, which narrows the window but cannot close it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>
_BPF_RET_K = 0x06  # BPF_RET | BPF_K
_BPF_LDB_ABS = 0x30  # BPF_LD | BPF_B | BPF_ABS
_BPF_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
_BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def seal(sock: socket.socket) -> bool:
    """Stop new TCP handshakes from starting on a listening socket (connections already queued, and handshakes under
    way, stay). Linux only; returns False where it is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    # drop a packet that opens a connection (SYN without ACK); keep everything else, so a handshake already under
    # way completes into the backlog (and is picked up) instead of being stranded half-open, to be reset at close.
    # A socket filter on TCP sees the packet from its TCP header on: byte 13 holds the flags.
    prog = (_SockFilter * 5)(
        _SockFilter(_BPF_LDB_ABS, 0, 0, 13),  # A = flags
        _SockFilter(_BPF_AND_K, 0, 0, 0x12),  # A &= SYN | ACK
        _SockFilter(_BPF_JEQ_K, 0, 1, 0x02),  # A == SYN ? next : skip one
        _SockFilter(_BPF_RET_K, 0, 0, 0),  # drop
        _SockFilter(_BPF_RET_K, 0, 0, 0xFFFFFFFF))  # keep the whole packet
    fprog = _SockFprog(5, prog)
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER,
                        ctypes.string_at(ctypes.addressof(fprog), ctypes.sizeof(fprog)))
    except OSError as exc:  # pragma: no cover - seccomp or an exotic kernel
        log.debug("cannot seal the listening socket (%s)", exc)
        return False
    return True


class Listener:
    """One listening port: ``start`` binds it, ``admit``/``release`` count connections against ``max_connections``,
    ``close`` seals it, picks up the backlog and closes it."""

    def __init__(self, name: str, max_connections: int):
        self.name = name
        self.max_connections = int(max_connections)
        self.open = 0  # connections admitted and not yet released
        self.accepted = 0  # connections the protocol factory was asked for (including refused ones)
        self.refused = 0  # connections closed at once because the cap was reached
        self.sock: socket.socket | None = None
        self._server: asyncio.AbstractServer | None = None
        self.sealed = False

    async def start(self, factory: Callable[[], asyncio.Protocol], host: str, port: int, *, backlog: int = 1024) -> int:
        """Bind and listen; returns the port (useful with port 0). OSError when the address cannot be used."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        if not infos:  # pragma: no cover - getaddrinfo raises instead
            raise OSError(f"cannot resolve {host!r}")
        family, type_, proto, _, addr = infos[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and host in ("::", ""):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise

        def counted() -> asyncio.Protocol:
            self.accepted += 1
            return factory()

        self._server = await loop.create_server(counted, sock=sock, backlog=backlog)
        self.sock = sock
        return sock.getsockname()[1]

    # -- connection cap ------------------------------------------------------------------------------------------
    def admit(self) -> bool:
        """Called by a protocol's ``connection_made``: False when the cap is reached (answer and close it then)."""
        if self.open >= self.max_connections:
            self.refused += 1
            return False
        self.open += 1
        return True

    def release(self) -> None:
        """Called once by ``connection_lost`` of a connection ``admit`` took."""
        self.open = max(0, self.open - 1)

    # -- close ----------------------------------------------------------------------------------------------------
    async def close(self, *, quiet: float = 0.05, max_wait: float = 1.0) -> None:
        """Seal, accept what the kernel has queued until nothing arrives for ``quiet`` seconds (at most
        ``max_wait``), then close the listening socket. Idempotent."""
        if self._server is None:
            return
        server, self._server = self._server, None
        loop = asyncio.get_running_loop()
        if self.sock is not None:
            self.sealed = seal(self.sock)
        end = loop.time() + max_wait
        seen = self.accepted
        quiet_until = loop.time() + quiet
        while loop.time() < end:
            await asyncio.sleep(min(0.01, quiet))
            if self.accepted != seen:
                seen = self.accepted
                quiet_until = loop.time() + quiet
            elif loop.time() >= quiet_until:
                break
        server.close()  # not wait_closed(): from Python 3.12 on it also waits for every open connection

    @property
    def listening(self) -> bool:
        return self._server is not None

    def describe(self) -> dict[str, Any]:
        return {"open": self.open, "accepted": self.accepted, "refused": self.refused,
                "max_connections": self.max_connections}
