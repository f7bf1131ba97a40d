"""Real outside tools against the server: Triton's perf_analyzer (HTTP and gRPC) and a Prometheus server that
scrapes /metrics and is queried through its HTTP API."""

from __future__ import annotations

import csv
import subprocess
import time

import numpy as np
from live import prometheus


def run_perf_analyzer(perf_analyzer, url, protocol, out, *extra):
    p = subprocess.run([perf_analyzer, "-m", "mlp", "-u", url, "-i", protocol, "-b", "1", "--concurrency-range",
                        "4:4", "--measurement-interval", "500", "-s", "100", "--max-trials", "10",
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


def test_prometheus_scrapes_batch_size_histogram(server, tmp_path):
    import tritonclient.http as th

    c = th.InferenceServerClient(f"127.0.0.1:{server.port}")
    for n in (1, 3, 5):
        i = th.InferInput("input", [n, 8], "FP32")
        i.set_data_from_numpy(np.ones((n, 8), np.float32))
        c.infer("mlp", [i])
    with prometheus(tmp_path, f"127.0.0.1:{server.port}") as api:
        value = None
        deadline = time.time() + 40
        while time.time() < deadline and value is None:
            time.sleep(0.5)
            try:
                res = api("query", {"query": 'xinfer_batch_size_count{model="mlp"}'})["result"]
            except OSError:
                continue
            if res:
                value = float(res[0]["value"][1])
        assert value is not None and value >= 3, "Prometheus never returned xinfer_batch_size_count"
        res = api("query", {"query": 'xinfer_batch_size_bucket{model="mlp",le="4"}'})["result"]
        assert float(res[0]["value"][1]) >= 2
