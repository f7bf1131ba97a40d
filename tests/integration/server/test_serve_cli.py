"""`xinfer-sdk serve` as a real subprocess: SIGTERM under load loses no request and exits 0; config.yaml with
several models; `xinfer-sdk bench` in-process and against the server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from live import BODY, caller, free_port

SERVE = [sys.executable, "-m", "xinfer_sdk"]


def start(args, env=None):
    port = free_port()
    p = subprocess.Popen([*SERVE, "serve", *args, "--port", str(port), "--no-grpc", "--profile", "cpu"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
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
    raise AssertionError("serve did not become ready")


def test_sigterm_under_load_loses_no_request_and_exits_0(model_files):
    p, port = start([f"mlp={model_files['mlp']}", "--drain-timeout", "20s"])
    stats = {"refused": 0, "lost": 0}

    async def run():
        stop_at = time.time() + 30
        tasks = [asyncio.ensure_future(caller(port, stats, stop_at)) for _ in range(16)]
        await asyncio.sleep(1.0)
        before = stats.get(200, 0)
        p.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*tasks), 40)
        return before

    answered_before = asyncio.run(run())
    code = p.wait(30)
    err = p.stderr.read().decode()
    assert code == 0, err[-2000:]
    assert answered_before > 50  # it really was under load
    assert stats["lost"] == 0, stats
    assert set(stats) <= {"refused", "lost", 200, 503}, stats
    assert "stopped (clean drain)" in err
    print("drain under load:", answered_before, stats)


def test_config_yaml_serves_several_models_by_name(model_files, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
server: {{drain_timeout: 5s, max_body: 1MiB}}
defaults: {{threads: 1, batch: {{max_batch_size: 4, max_batch_delay: 0ms}}}}
models:
  - {{name: first, path: {model_files['mlp']}}}
  - {{name: second, path: {model_files['mlp']}, batch: {{max_batch_size: 2}}}}
""")
    p, port = start(["--config", str(cfg)])
    try:
        for name, mbs in (("first", 4), ("second", 2)):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{name}/config") as r:
                assert json.loads(r.read())["max_batch_size"] == mbs
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{name}/infer", data=BODY)
            with urllib.request.urlopen(req) as r:
                assert json.loads(r.read())["model_name"] == name
        big = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/first/infer", data=b"x" * (2 << 20))
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(big)
        assert ei.value.code == 413
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0


def test_serve_user_errors_are_one_line_exit_2(model_files, tmp_path, cli_run):
    code, _, err = cli_run("serve", str(tmp_path / "missing.xinfer"), "--port", "0")
    assert code == 2 and "error:" in err and "Traceback" not in err
    code, _, err = cli_run("serve", str(model_files["mlp"]), "--api-key-env", "XINFER_TEST_UNSET_KEY")
    assert code == 2 and "XINFER_TEST_UNSET_KEY" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {name: a}\n")
    code, _, err = cli_run("serve", "--config", str(bad))
    assert code == 2 and "models[0].path" in err


def test_bench_in_process_json_and_plot(model_files, tmp_path, cli_run):
    png = tmp_path / "curve.png"
    code, out, err = cli_run("bench", str(model_files["mlp"]), "--profile", "cpu", "--concurrency", "1,4",
                             "--duration", "0.5s", "--json", "--plot", str(png))
    assert code == 0, err
    rep = json.loads(out)
    assert rep["transport"] == "in-process" and [r["concurrency"] for r in rep["results"]] == [1, 4]
    assert all(r["completed"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in rep["results"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bench_against_server_closed_and_open_loop(server, cli_run, protocol):
    url = f"http://127.0.0.1:{server.port}" if protocol == "http" else f"127.0.0.1:{server.grpc_port}"
    code, out, err = cli_run("bench", "--url", url, "--model", "mlp", "--protocol", protocol, "--concurrency", "2",
                             "--request-rate", "200", "--poisson", "--duration", "0.5s", "--json")
    assert code == 0, err
    rep = json.loads(out)
    closed, opened = rep["results"]
    assert closed["mode"] == "closed" and closed["completed"] > 0 and not closed["errors"]
    assert opened["mode"] == "open" and opened["rate"] == 200 and opened["completed"] > 20


def test_bench_reports_unknown_model(server, cli_run):
    code, _, err = cli_run("bench", "--url", f"http://127.0.0.1:{server.port}", "--model", "nope",
                           "--duration", "0.2s")
    assert code == 2 and "unknown model 'nope'" in err


def test_quickstart_inference_server_serves_for_real(model_files):
    import numpy as np
    import tritonclient.http as th

    import xinfer_sdk as xs

    with xs.InferenceServer(model_path=str(model_files["mlp"]), device="cpu", batch_size=4, max_workers=1,
                            profile="cpu", name="quick", port=0, grpc_port=None) as server:
        server.start()
        c = th.InferenceServerClient(f"127.0.0.1:{server.port}")
        i = th.InferInput("input", [2, 8], "FP32")
        x = np.ones((2, 8), np.float32)
        i.set_data_from_numpy(x)
        np.testing.assert_allclose(c.infer("quick", [i]).as_numpy("output"), model_files["mlp_ref"](x), rtol=1e-5)
        assert server.infer({"input": x})["output"].shape == (2, 4)  # embedded use still works
        assert server.stop() == 0
