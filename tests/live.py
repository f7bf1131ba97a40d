"""Helpers for tests that drive real processes over loopback: free ports, a keep-alive HTTP load that counts
lost requests, and a real Prometheus (Debian's `prometheus`) scraping a target."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}).encode()
REQ = (b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(BODY)) + BODY


def free_ports(n: int) -> list[int]:
    """n distinct free ports: every socket stays bound until all are picked (picked one at a time, the kernel may
    hand the same just-released port out twice: a server's HTTP and gRPC ports once collided that way)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


async def caller(port: int, stats: dict, stop_at: float) -> None:
    """Keep one request to model 'mlp' outstanding on a keep-alive connection until ``stop_at``; counts answers
    by status; 'refused' = never sent, 'lost' = sent and never answered."""
    while time.time() < stop_at:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            stats["refused"] += 1
            return
        try:
            while time.time() < stop_at:
                writer.write(REQ)
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                except (asyncio.IncompleteReadError, ConnectionError):
                    stats["lost"] += 1
                    return
                status = int(head.split(b" ", 2)[1])
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                stats[status] = stats.get(status, 0) + 1
                if status == 503:
                    return  # told the server is closing
                if b"connection: close" in head.lower():
                    break  # reconnect
        finally:
            writer.close()


@contextlib.contextmanager
def prometheus(tmp: Path, target: str, labels: str = ""):
    """A real Prometheus scraping ``target`` every second; yields a query function (``api(what, params)``).
    Skips the test with the reason when the binary is missing."""
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("the 'prometheus' binary is not installed (Debian package 'prometheus'; "
                    "bash .ci/install-system-deps.sh installs it)")
    port = free_port()
    cfg = tmp / "prometheus.yml"
    cfg.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n  - job_name: xinfer\n"
                   f"    static_configs:\n      - targets: ['{target}']\n"
                   + (f"        labels: {labels}\n" if labels else ""))
    proc = subprocess.Popen([exe, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)

    def api(what: str, params: dict) -> object:
        url = f"http://127.0.0.1:{port}/api/v1/{what}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())["data"]

    try:
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
