"""Fixtures for the server unit tests: a gate for the test-double backend, and background servers."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("httptools")
pytest.importorskip("grpc")
pytest.importorskip("prometheus_client")


@pytest.fixture
def gate():
    g = threading.Event()
    g.set()
    yield g
    g.set()


@pytest.fixture
def serve():
    """serve(models, **server_kw) -> a started background Server on free ports; drained at teardown."""
    from xinfer_sdk.server.runner import Server

    started = []

    def start(models, **kw):
        kw.setdefault("port", 0)
        kw.setdefault("grpc_port", 0)
        kw.setdefault("gpu_metrics", False)
        kw.setdefault("drain_timeout", 5)
        s = Server(models, **kw).start_background()
        started.append(s)
        return s

    yield start
    for s in started:
        if s._thread.is_alive():
            s.stop()
