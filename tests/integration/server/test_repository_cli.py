"""`xinfer-sdk serve REPOSITORY` as a real subprocess: Triton's layout, --model-control explicit --load-model, the
--json ready event with versions, a clean SIGTERM (issue 14, item 2)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

from live import free_port
from onnx_models import make_mlp_onnx


def test_serve_a_repository_in_explicit_mode(tmp_path):
    for name, versions in (("mlp", (1, 2)), ("other", (1,))):
        for v in versions:
            (tmp_path / name / str(v)).mkdir(parents=True)
            make_mlp_onnx(tmp_path / name / str(v) / "model.onnx", seed=v)
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "xinfer_sdk", "serve", str(tmp_path), "--model-control", "explicit",
                          "--load-model", "mlp", "--port", str(port), "--no-grpc", "--profile", "cpu", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(p.stdout.readline())
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            index = json.loads(r.read())
        p.send_signal(signal.SIGTERM)
        code = p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
    err = p.stderr.read()
    assert ready["event"] == "ready" and ready["model_control"] == "explicit", err[-2000:]
    assert [(m["name"], m["version"]) for m in ready["models"]] == [("mlp", "2")]
    assert {(e["name"], e["version"], e["state"]) for e in index} == {("mlp", "2", "READY"),
                                                                      ("other", "", "UNAVAILABLE")}
    assert "serving 'mlp' version 2" in err and "model control: explicit" in err
    assert code == 0
