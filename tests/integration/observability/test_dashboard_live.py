"""Every panel query of deploy/grafana/xinfer-dashboard.json returns data from a real Prometheus (Debian's
`prometheus`, scrape interval 1 s) that scrapes a real `xinfer-sdk serve` under load.

The dashboard's variables are substituted as Grafana would: `$model` as one model and as "All" (its allValue).
The GPU panels are exempt only while the server exports no GPU series (no NVML / amdsmi here): the test names
them, so a non-GPU panel that returns nothing still fails. docs/metrics.md says the same."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from live import caller, free_port, prometheus

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("prometheus_client")

from onnx_models import make_mlp_onnx  # noqa: E402

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "xinfer-dashboard.json"
RULES = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "xinfer-alerts.yaml"
GPU_PANELS = {"GPU utilization", "GPU memory, temperature, power"}
# an invalid request (8 values for a [1, 8] input declared as [1, 4]): answered 400, counted as InvalidInput
BAD = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.5] * 4}]}).encode()


def panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


def substitute(expr: str, model: str) -> str:
    """Grafana's variables in a panel expression: the dashboard's own, and the built-in interval ones."""
    for name, value in (("$__rate_interval", "1m"), ("$__interval", "1s"), ("${model}", model), ("$model", model)):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a variable the test does not know: {expr}"
    return expr


def start_server(onnx: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "xinfer_sdk", "serve", f"mlp={onnx}", "--port", str(port),
                          "--no-grpc", "--profile", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env={**os.environ})
    deadline = time.time() + 60
    while time.time() < deadline:
        if p.poll() is not None:
            raise AssertionError(f"serve exited early: {p.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return p, port
        except OSError:
            time.sleep(0.2)
    p.kill()
    raise AssertionError("serve did not become ready within 60 s")


def bad_request(port: int) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/mlp/infer", data=BAD)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def load(port: int, seconds: float) -> dict:
    """8 keep-alive callers of model 'mlp', and one invalid request every 0.3 s, for ``seconds``."""
    stats: dict = {"refused": 0, "lost": 0, "bad": []}

    async def run() -> None:
        stop_at = time.time() + seconds
        tasks = [asyncio.ensure_future(caller(port, stats, stop_at)) for _ in range(8)]
        loop = asyncio.get_running_loop()
        while time.time() < stop_at:
            stats["bad"].append(await loop.run_in_executor(None, bad_request, port))
            await asyncio.sleep(0.3)
        await asyncio.gather(*tasks)

    asyncio.run(run())
    return stats


def has_data(result: list) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """A real server, load on it for 8 s, and a real Prometheus that scraped it all along: its query function."""
    tmp = tmp_path_factory.mktemp("dashboard-live")
    onnx = tmp / "mlp.onnx"
    make_mlp_onnx(onnx)
    proc, port = start_server(onnx)
    try:
        with prometheus(tmp, f"127.0.0.1:{port}") as api:
            stats = load(port, 8.0)
            assert stats.get(200, 0) > 100 and stats["lost"] == 0, stats  # it really was under load
            assert set(stats["bad"]) == {400}, stats["bad"]
            yield api
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_for_data(api, queries: dict[str, str]) -> dict[str, str]:
    """The queries (expr -> what it is) that still return no data after 20 s (a query may wait for its second
    scrape after the load)."""
    deadline = time.time() + 20
    while True:
        empty = {expr: what for expr, what in queries.items() if not has_data(api("query", {"query": expr})["result"])}
        if not empty or time.time() > deadline:
            return empty
        time.sleep(1)


def test_every_panel_query_returns_data_from_a_real_prometheus(scraped):
    api = scraped
    # the dashboard's model variable: label_values(xinfer_model_info, model)
    models: list = []
    deadline = time.time() + 20
    while time.time() < deadline and "mlp" not in models:
        try:
            models = api("label/model/values", {"match[]": "xinfer_model_info"})
        except OSError:
            time.sleep(0.5)
    assert "mlp" in models

    gpu_series = api("series", {"match[]": '{__name__=~"xinfer_gpu_.+"}'})
    queries = {substitute(t["expr"], model): f"{p['title']} / {t['refId']}"
               for p in panels() for t in p["targets"] for model in ("mlp", ".*")
               if p["title"] not in GPU_PANELS or gpu_series}
    assert len(queries) >= 2 * (23 if gpu_series else 19)
    empty = wait_for_data(api, queries)
    assert not empty, f"panel queries that returned no data: {json.dumps(empty, indent=1)}"
    if not gpu_series:  # exempt: exactly the GPU panels, and only because there is no GPU series
        assert {p["title"] for p in panels() if all("xinfer_gpu_" in t["expr"] for t in p["targets"])} == GPU_PANELS


def test_alert_rules_evaluate_on_the_real_series(scraped):
    """Each shipped alert expression runs on the server's real label sets (a vector-matching mistake is an
    error here, not in promtool's hand-written series); without its threshold, those that apply to a healthy
    CPU server under load return a value."""
    api = scraped
    rules = {r["alert"]: r["expr"] for r in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]}
    for expr in rules.values():
        api("query", {"query": expr})  # raises on a query error (HTTP 400/422)
    values = {re.sub(r"\s*(>|==)\s*[0-9.e]+\s*$", "", rules[name]): name
              for name in ("XinferP99OverSLO", "XinferClientErrors", "XinferReplicaNotReady", "XinferTargetDown")}
    empty = wait_for_data(api, values)
    assert not empty, f"alert expressions without their threshold that returned nothing: {empty}"
