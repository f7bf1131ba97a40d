"""Real outside tools against the server: Triton's perf_analyzer (HTTP and gRPC) and a Prometheus server that
scrapes /metrics and is queried through its HTTP API."""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest


def run_perf_analyzer(perf_analyzer, url, protocol, out, *extra):
    p = subprocess.run([perf_analyzer, "-m", "mlp", "-u", url, "-i", protocol, "-b", "1", "--concurrency-range",
                        "4:4", "--measurement-interval", "500", "-s", "100", "--max-trials", "3",
                        "--input-data", "zero", "-f", str(out), *extra], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    row = next(csv.DictReader(out.open()))
    assert float(row["Inferences/Second"]) > 0
    assert int(row["Server Queue"]) >= 0  # read from our statistics extension


def test_perf_analyzer_runs_against_our_server_http(server, perf_analyzer, tmp_path):
    run_perf_analyzer(perf_analyzer, f"127.0.0.1:{server.port}", "http", tmp_path / "pa.csv")


def test_perf_analyzer_runs_against_our_server_grpc(grpc_server, perf_analyzer, tmp_path):
    """Once per gRPC transport (native, grpcio)."""
    run_perf_analyzer(perf_analyzer, f"127.0.0.1:{grpc_server.grpc_port}", "grpc", tmp_path / "pa.csv")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prometheus_scrapes_batch_size_histogram(server, tmp_path):
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("the 'prometheus' binary is not installed (Debian package 'prometheus'; "
                    "bash .ci/install-system-deps.sh installs it)")
    import tritonclient.http as th

    c = th.InferenceServerClient(f"127.0.0.1:{server.port}")
    for n in (1, 3, 5):
        i = th.InferInput("input", [n, 8], "FP32")
        i.set_data_from_numpy(np.ones((n, 8), np.float32))
        c.infer("mlp", [i])
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                   "scrape_configs:\n  - job_name: xinfer\n    static_configs:\n"
                   f"      - targets: ['127.0.0.1:{server.port}']\n")
    proc = subprocess.Popen([exe, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        q = urllib.parse.urlencode({"query": 'xinfer_batch_size_count{model="mlp"}'})
        deadline = time.time() + 40
        value = None
        while time.time() < deadline and value is None:
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{q}", timeout=2) as r:
                    import json

                    res = json.loads(r.read())["data"]["result"]
            except OSError:
                continue
            if res:
                value = float(res[0]["value"][1])
        assert value is not None and value >= 3, "Prometheus never returned xinfer_batch_size_count"
        q = urllib.parse.urlencode({"query": 'xinfer_batch_size_bucket{model="mlp",le="4"}'})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{q}", timeout=2) as r:
            import json

            assert float(json.loads(r.read())["data"]["result"][0]["value"][1]) >= 2
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
