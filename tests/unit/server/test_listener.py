"""The listening socket's reset-free close: connections the kernel queued before the close are served, a connect
after the seal is refused (never reset), and connections already open keep working (issue 20)."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections import Counter

import pytest

from xinfer_sdk.server.listener import Listener

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the seal is a Linux socket filter")


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(b"ok:" + data)


def test_queued_connections_are_served_and_late_ones_refused_not_reset():
    uvloop = pytest.importorskip("uvloop")
    results: list[str] = []
    opened: list[socket.socket] = []

    def client(payload: bytes) -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(payload)
                results.append(c.recv(64).decode())
        except OSError as exc:
            results.append(type(exc).__name__)

    async def main() -> None:
        nonlocal port
        listener = Listener("test", max_connections=100)
        port = await listener.start(Echo, "127.0.0.1", 0)
        before = socket.create_connection(("127.0.0.1", port), timeout=5)  # open before the close
        opened.append(before)
        await asyncio.sleep(0.05)
        queued = [threading.Thread(target=client, args=(b"q",)) for _ in range(30)]
        for t in queued:
            t.start()
        time.sleep(0.3)  # the loop is blocked: all 30 wait in the kernel's accept backlog
        await listener.close()
        assert listener.sealed
        late = [threading.Thread(target=client, args=(b"late",)) for _ in range(3)]
        for t in late:
            t.start()
        loop = asyncio.get_running_loop()
        for t in queued + late:
            await loop.run_in_executor(None, t.join, 10)
        before.sendall(b"still")  # an open connection is not touched by the seal
        assert (await loop.run_in_executor(None, before.recv, 64)) == b"ok:still"

    port = 0
    uvloop.run(main())
    for s in opened:
        s.close()
    assert Counter(results) == Counter({"ok:q": 30, "ConnectionRefusedError": 3}), Counter(results)
