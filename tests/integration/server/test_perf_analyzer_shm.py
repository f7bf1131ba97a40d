"""Triton's perf_analyzer, unmodified and with no data flags, against a default `xinfer-sdk serve` (a subprocess):
random input (NaN and Inf included), `--shared-memory system`, and `-i grpc`. Skipped where no perf_analyzer binary
is present (CI has none): set XINFER_PERF_ANALYZER to one, or keep /tmp/anchor/pa (the anchors' setup)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from live import free_ports

pytestmark = pytest.mark.slow


def _perf_analyzer() -> tuple[str, dict[str, str]]:
    env = dict(os.environ)
    exe = os.environ.get("XINFER_PERF_ANALYZER")
    if exe and Path(exe).exists():
        return exe, env
    anchor = Path("/tmp/anchor/pa")
    if (anchor / "2.51.0" / "perf_analyzer").exists():
        env["LD_LIBRARY_PATH"] = f"{anchor / 'lib'}:{env.get('LD_LIBRARY_PATH', '')}"
        return str(anchor / "2.51.0" / "perf_analyzer"), env
    cached = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "xinfer-sdk" / "perf_analyzer"
    if (cached / "perf_analyzer").exists():
        return str(cached / "perf_analyzer"), env
    pytest.skip("no perf_analyzer here (set XINFER_PERF_ANALYZER, or see tests/integration/server/"
                "setup_perf_analyzer.sh)")


@pytest.fixture(scope="module")
def served(model_files):
    """`xinfer-sdk serve mlp.onnx` with its defaults (HTTP + native gRPC), on free ports."""
    port, gport = free_ports(2)
    p = subprocess.Popen([sys.executable, "-m", "xinfer_sdk", "serve", f"mlp={model_files['mlp']}",
                          "--port", str(port), "--grpc-port", str(gport), "--profile", "cpu"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while True:
        if p.poll() is not None:
            raise AssertionError(f"serve exited early: {p.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            if time.time() > deadline:
                p.kill()
                raise AssertionError("serve did not become ready") from None
            time.sleep(0.2)
    yield port, gport
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 0


def _run(out: Path, url: str, *extra: str) -> dict[str, str]:
    exe, env = _perf_analyzer()
    p = subprocess.run([exe, "-m", "mlp", "-u", url, "-b", "1", "--concurrency-range", "2:2",
                        "--measurement-interval", "500", "-s", "100", "--max-trials", "10", "-f", str(out), *extra],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    row = next(csv.DictReader(out.open()))
    assert float(row["Inferences/Second"]) > 0
    return row


def test_default_flags_http(served, tmp_path):
    """No data flags: random FP32 bytes (NaN and Inf among them) are served, as by Triton."""
    _run(tmp_path / "pa.csv", f"127.0.0.1:{served[0]}")


def test_system_shared_memory_http(served, tmp_path):
    _run(tmp_path / "pa.csv", f"127.0.0.1:{served[0]}", "--shared-memory", "system")


def test_grpc(served, tmp_path):
    _run(tmp_path / "pa.csv", f"127.0.0.1:{served[1]}", "-i", "grpc")


def test_system_shared_memory_grpc(served, tmp_path):
    _run(tmp_path / "pa.csv", f"127.0.0.1:{served[1]}", "-i", "grpc", "--shared-memory", "system")
