"""`build --output-kind NAME=KIND` and `--pad` reach the build (the gate's metric, the padding step)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from onnx_models import make_mlp_onnx  # noqa: E402


@pytest.fixture
def mlp(tmp_path):
    make_mlp_onnx(tmp_path / "mlp.onnx")
    return str(tmp_path / "mlp.onnx")


def test_output_kind_is_the_gates_metric_and_is_reported(cli_run, mlp, tmp_path):
    code, out, err = cli_run("build", mlp, "--profile", "cpu", "--precision", "fp32", "-o", str(tmp_path / "a.xinfer"),
                             "--output-kind", "output=embedding", "--json")
    assert code == 0, err
    m = json.loads(out)["manifest"]["accuracy"]["outputs"]["output"]
    assert m["kind"] == "embedding" and m["why"] == "given with --output-kind" and "top1_agreement" not in m
    code, out, _ = cli_run("inspect", str(tmp_path / "a.xinfer"))
    assert code == 0 and "output: embedding, given with --output-kind" in out


def test_unknown_kind_and_unknown_output_are_one_line_each(cli_run, mlp, tmp_path):
    code, _, err = cli_run("build", mlp, "--profile", "cpu", "-o", str(tmp_path / "b.xinfer"), "--output-kind",
                           "output=blob")
    assert code == 2 and "unknown kind 'blob'; expected one of class, sequence, map, boxes, embedding, raw" in err
    assert "Traceback" not in err
    code, _, err = cli_run("build", mlp, "--profile", "cpu", "-o", str(tmp_path / "c.xinfer"), "--output-kind",
                           "logits=class")
    assert code == 2 and "the model has no output 'logits'; its outputs are output" in err


def test_pad_reaches_the_padding_step(cli_run, mlp, tmp_path):
    code, _, err = cli_run("build", mlp, "--profile", "cpu", "-o", str(tmp_path / "d.xinfer"), "--pad",
                           "{inputs: {input: {axis: 1, value: 0}}, buckets: [4, 8], outputs: {output: 1}}")
    assert code == 2 and "padding" in err and "axis 1 of 'input' is fixed at 8" in err
