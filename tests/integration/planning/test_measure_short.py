"""`plan --measure` on the tiny digits MLP, shortened with --measure-seconds / --measure-batches: both tables say
whether per-request overhead is in them, the compute efficiency stays within the peak, and the fit says when the
model is too small to measure compute."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory):
    """The digits MLP's topology (examples/models.py digits_mlp: 64-128-64-10), seeded random weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    sizes, nodes, inits, prev = (64, 128, 64, 10), [], [], "input"
    for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits += [numpy_helper.from_array((rng.standard_normal((o, i)) * 0.1).astype(np.float32), f"w{k}"),
                  numpy_helper.from_array(np.zeros(o, np.float32), f"b{k}")]
        out = "logits" if k == len(sizes) - 2 else f"g{k}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{k}", f"b{k}"], [out], transB=1))
        if out != "logits":
            nodes.append(helper.make_node("Relu", [out], [f"h{k}"]))
            prev = f"h{k}"
    g = helper.make_graph(nodes, "digits", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path_factory.mktemp("digits") / "digits.onnx"
    onnx.save(m, path)
    return path


@pytest.fixture(scope="module")
def measured(digits_file):
    args = [sys.executable, "-m", "xinfer_sdk", "plan", str(digits_file), "--profile", "cpu", "--measure",
            "--measure-seconds", "0.05", "--measure-batches", "1,4,16,32"]
    env = {**os.environ, "COLUMNS": "200"}
    text = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    data = subprocess.run([*args, "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert text.returncode == 0 and data.returncode == 0, text.stderr + data.stderr
    return text.stdout, json.loads(data.stdout)


def test_both_tables_say_whether_per_request_overhead_is_in(measured):
    out, _ = measured
    assert "latency: one batch of b single-sample requests, per-request host work included" in out
    assert "predicted vs measured, one request of b samples" in out
    assert "b requests ms" in out


def test_the_measurement_is_as_short_as_asked(measured):
    _, data = measured
    cal = data["profiles"][0]["calibration"]
    assert cal["measure"] == {"seconds_per_batch": 0.05, "rounds": 5, "batches": [1, 4, 16, 32]}
    assert [r["batch"] for r in cal["rows"]] == [1, 4, 16, 32]


def test_the_fitted_compute_efficiency_is_within_the_peak(measured):
    _, data = measured
    cal = data["profiles"][0]["calibration"]
    assert 0 < cal["factors"]["eff_compute"] <= 1.0
    comp = cal["compute"]
    if not comp["identified"]:  # the usual case for this model: say so, keep the profile's value
        assert cal["factors"]["eff_compute"] == pytest.approx(comp["kept_prior"])
        assert "overhead-dominated" in comp["note"]
    assert cal["meets_target"] == (cal["max_abs_error"] <= 0.15)


def test_measure_options_need_measure(cli_run, digits_file):
    code, _, err = cli_run("plan", str(digits_file), "--profile", "cpu", "--measure-seconds", "0.1")
    assert code == 2 and "--measure-seconds" in err and "--measure" in err
    code, _, err = cli_run("plan", str(digits_file), "--profile", "cpu", "--measure", "--measure-batches", "1,x")
    assert code == 2 and "--measure-batches" in err
