"""bench/soak.py at CI size: a real ``xinfer-sdk serve`` subprocess, 20,000 checked requests over HTTP and gRPC with
cancellations and deadlines; no wrong answer, no unexpected error, resources bounded. The full soak is
``python bench/soak.py`` (1,000,000 requests, docs/serving.md#soak)."""

from __future__ import annotations

import asyncio
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import soak  # noqa: E402


@pytest.fixture(scope="module")
def report():
    return soak.run_soak(20_000, seconds=120, sample_s=0.5, rss_bound_mib=32, rss_bound_pct=10, fd_slack=5,
                         log=lambda *_: None)


@pytest.mark.slow
def test_every_answer_is_checked_and_right(report):
    c = report["counts"]
    assert report["requests"] == 20_000, soak.table(report)
    assert c["wrong"] == 0 and c["unexpected"] == 0, soak.table(report)
    assert c["ok"] + c["ok_close"] > 0.9 * 20_000, soak.table(report)
    assert set(report["by_protocol"]) == {"http", "grpc"}
    assert all(n.get("ok", 0) > 1000 and n.get("cancelled", 0) > 0 for n in report["by_protocol"].values())


@pytest.mark.slow
def test_resources_bounded_and_server_drains_cleanly(report):
    r = report["resources"]
    assert r["rss_mib"]["flat"] and r["fds"]["flat"] and r["threads"]["flat"], soak.table(report)
    assert report["server_exit"] == 0 and not report["problems"], soak.table(report)
    assert report["passed"], soak.table(report)


def _entry():
    y = np.arange(8, dtype=np.float32).reshape(2, 4)
    head = b'{"model_name":"m","model_version":"1","outputs":[{"name":"y","datatype":"FP32","shape":[2,4],' \
           b'"parameters":{"binary_data_size":32}}]}'
    return {"out": "y", "y": y, "y_bytes": y.tobytes(), "http_head": head}


def test_the_check_tells_right_close_and_wrong_answers_apart():
    e = _entry()
    body = e["http_head"] + e["y_bytes"]
    assert soak.check_http(e, body, len(e["http_head"])) == "ok"
    close = (e["y"] * (1 + 1e-6)).astype(np.float32).tobytes()
    other_head = e["http_head"].replace(b'"model_version":"1",', b'"model_version":"1","id":"",')
    assert soak.check_http(e, other_head + close, len(other_head)) == "ok_close"
    bad = e["y"].copy()
    bad[1, 3] += 0.01
    assert soak.check_http(e, e["http_head"] + bad.tobytes(), len(e["http_head"])).startswith("wrong")
    short = e["http_head"].replace(b"[2,4]", b"[1,4]")
    assert soak.check_http(e, short + e["y_bytes"][:16], len(short)).startswith("wrong")
    assert soak.check_http(e, b'{"outputs":[]}', None).startswith("wrong")


def test_resource_verdicts_catch_a_leak():
    base = {"rss_mib": 80.0, "fds": 18, "threads": 10}
    flat = [{"done": i * 10_000, "rss_mib": 80.0 + (i % 2) * 0.5, "fds": 36, "threads": 10} for i in range(20)]
    assert all(soak.analyse(flat, base, base)[k]["flat"] for k in ("rss_mib", "fds", "threads"))
    leak = [dict(s, rss_mib=80.0 + i * 2.0) for i, s in enumerate(flat)]  # +36 MiB over the steady phase
    assert not soak.analyse(leak, base, base)["rss_mib"]["flat"]
    assert not soak.analyse(flat, base, dict(base, fds=30))["fds"]["flat"]  # sockets left open
    assert not soak.analyse([dict(s, threads=10 + (i > 15)) for i, s in enumerate(flat)], base, base)["threads"]["flat"]


# -- the HTTP client against a stand-in server that closes keep-alive connections (test double) ---------------------
def _http_entry():
    e = _entry()
    e["model"] = "m"
    e["http"] = e["http_deadline"] = b"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
    return e


async def _client_against(mode: str, requests: int, pause: tuple[float, float] | None) -> soak._Budget:
    """``mode``: 'idle_close' closes a connection idle for 0.2 s; 'race' closes instead of answering a request
    that arrives after 0.2 s idle (the close crossing the send); 'drop' never answers and closes."""
    e = _http_entry()
    answer = (b"HTTP/1.1 200 OK\r\nInference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n"
              % (len(e["http_head"]), len(e["http_head"]) + 32)) + e["http_head"] + e["y_bytes"]

    async def handle(reader, writer):
        since = time.monotonic()
        try:
            while True:
                wait = 0.2 if mode == "idle_close" else None
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
                await reader.readexactly(int(re.search(rb"Content-Length: (\d+)", head).group(1)))
                if mode == "drop" or (mode == "race" and time.monotonic() - since > 0.2):
                    break
                writer.write(answer)
                since = time.monotonic()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    bud = soak._Budget(requests, None, [0], 0)
    async with srv:
        await asyncio.wait_for(soak._http_loop(srv.sockets[0].getsockname()[1], [e], bud, random.Random(0), pause),
                               30)
    return bud


@pytest.fixture()
def no_cancels(monkeypatch):
    monkeypatch.setattr(soak, "CANCEL_P", 0.0)
    monkeypatch.setattr(soak, "DEADLINE_P", 0.0)
    monkeypatch.setattr(soak, "IDLE_S", 0.1)


def test_http_client_reconnects_when_the_server_closed_an_idle_connection(no_cancels):
    bud = asyncio.run(_client_against("idle_close", 4, (0.35, 0.35)))
    assert bud.counts == {"ok": 4, "reconnect": 3}, bud.samples  # no pause-and-reconnect before the first


def test_http_client_retries_once_when_the_idle_close_crosses_the_send(no_cancels):
    bud = asyncio.run(_client_against("race", 3, (0.3, 0.3)))
    assert bud.counts == {"ok": 3, "idle_retry": 2, "reconnect": 2}, bud.samples


def test_http_client_counts_a_request_lost_on_a_busy_connection(no_cancels):
    bud = asyncio.run(_client_against("drop", 2, None))
    assert bud.counts == {"unexpected": 2, "reconnect": 1} and "http lost" in bud.samples[0], bud.samples
