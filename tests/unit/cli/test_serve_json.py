"""Issue 18 item 15a: ``serve --json`` prints one JSON object per event on stdout (ready, stopped); the human
lines stay on stderr unchanged (the attack harness parses "ready: HTTP http://HOST:PORT, gRPC HOST:PORT")."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("httptools")


def test_serve_json_reports_ready_and_stopped_events(tmp_path):
    from onnx_models import make_mlp_onnx

    make_mlp_onnx(tmp_path / "mlp.onnx")
    p = subprocess.Popen([sys.executable, "-m", "xinfer_sdk", "serve", f"mlp={tmp_path / 'mlp.onnx'}", "--port", "0",
                          "--grpc-port", "0", "--profile", "cpu", "--threads", "1", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(p.stdout.readline())  # blocks until the server is up (or exits: then "" fails here)
        assert ready["event"] == "ready" and ready["http_port"] > 0 and ready["grpc_port"] > 0
        assert ready["http_url"] == f"http://127.0.0.1:{ready['http_port']}"
        assert [(m["name"], m["max_batch_size"] > 0) for m in ready["models"]] == [("mlp", True)]
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [{"event": "stopped", "exit_code": 0, "clean": True}]
    human = re.search(r"ready: HTTP http://([\d.]+):(\d+), gRPC ([\d.]+):(\d+)", err)
    assert human and int(human.group(2)) == ready["http_port"] and int(human.group(4)) == ready["grpc_port"]
