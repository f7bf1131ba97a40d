"""Bundles built for a CPU, a data-center GPU and a Jetson profile (tiny MLP), and a real plan.json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from onnx_models import make_mlp_onnx  # noqa: E402


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    from xinfer_sdk.builder import build

    d = tmp_path_factory.mktemp("deploy-bundles")
    onnx = d / "mlp.onnx"
    make_mlp_onnx(onnx)
    out = {}
    for prof in ("cpu", "t4", "jetson-agx-orin-64gb"):
        out[prof] = build(str(onnx), profile=prof, output=str(d / f"mlp-{prof}.xinfer"), name="mlp").root
    return out


@pytest.fixture(scope="session")
def plan_json(bundles, tmp_path_factory):
    """`xinfer-sdk plan --json` for cpu and t4 at a rate that needs several CPU replicas."""
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    res = subprocess.run([sys.executable, "-m", "xinfer_sdk", "plan", str(bundles["cpu"]), "-p", "cpu,t4",
                          "--target-qps", "600000", "--p99", "20ms", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    path.write_text(res.stdout)
    assert {p["profile"] for p in json.loads(res.stdout)["profiles"]} == {"cpu", "t4"}
    return path
