"""`xinfer-sdk plan` on the command line: --json, --explain, --plot, and one-line exit-2 errors."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnx")
pytest.importorskip("click")


def test_json_output_is_complete(cli_run, mlp_file):
    code, out, err = cli_run("plan", str(mlp_file), "--profile", "t4,l4", "--p99", "10ms", "--target-qps", "20000",
                             "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["slo"] == {"p99_s": 0.01, "target_qps": 20000.0}
    assert [p["profile"] for p in data["profiles"]] == ["t4", "l4"]
    t4 = data["profiles"][0]
    assert t4["recommendation"]["feasible"] and t4["recommendation"]["replicas"] >= 1
    assert t4["recommendation"]["policy"]["max_batch_size"] >= 1
    assert t4["table"][0]["batch"] == 1 and t4["table"][0]["seconds"] > 0
    assert t4["memory"]["max_batch"] > 0 and t4["memory"]["seed_rule_ok"] is True
    assert "batch_1" in t4["bound"] and t4["device_model"]["eff_memory"]["source"]
    assert t4["cost"]["flops_per_sample"] == pytest.approx(2 * (64 * 256 + 256 * 10) + 256 + 10 + 256)
    assert data["best"]["fewest_devices"] in ("t4", "l4")


def test_human_output_explain_and_plot(cli_run, mlp_file, tmp_path):
    png = tmp_path / "plan.png"
    code, out, err = cli_run("plan", str(mlp_file), "-p", "l4", "--p99", "10ms", "--target-qps", "1000", "--explain",
                             "--plot", str(png))
    assert code == 0, err
    assert "l4" in out and "largest batch that fits" in out and "every figure and its derivation" in out
    assert "=> 1 x l4" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, needle", [
    (("--profile", "no-such-gpu"), "no-such-gpu"),
    (("--p99", "fast"), "--p99"),
    (("--p99", "-5ms"), "--p99"),
    (("--target-qps", "0"), "target-qps"),
    (("--precision", "fp64"), "precision"),
    (("--price", "t4"), "--price"),
    (("--shapes", "nope:1x2"), "no input 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(cli_run, mlp_file, args, needle):
    code, out, err = cli_run("plan", str(mlp_file), "--profile", "t4", *args)  # a later --profile wins
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_missing_shapes_for_a_dynamic_axis_names_the_input(cli_run, seq_model_file):
    code, out, err = cli_run("plan", str(seq_model_file), "--profile", "t4")
    assert code == 2 and "'x'" in err and "--shapes x:" in err
    code, out, err = cli_run("plan", str(seq_model_file), "--profile", "t4", "--shapes", "x:1x8x16..1x64x16..1x128x16",
                             "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["profiles"][0]["cost"]["input_shapes"] == {"x": [1, 64, 16]}  # OPT shapes for latency


def test_json_errors_are_json_too(cli_run, mlp_file):
    code, out, err = cli_run("plan", str(mlp_file), "--profile", "nope", "--json")
    assert code == 2 and json.loads(out)["exit_code"] == 2
