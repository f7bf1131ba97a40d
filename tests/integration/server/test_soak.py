"""bench/soak.py at CI size: a real ``xinfer-sdk serve`` subprocess, 20,000 checked requests over HTTP and gRPC with
cancellations and deadlines; no wrong answer, no unexpected error, resources bounded. The full soak is
``python bench/soak.py`` (1,000,000 requests, docs/serving.md#soak)."""

from __future__ import annotations

import sys
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
