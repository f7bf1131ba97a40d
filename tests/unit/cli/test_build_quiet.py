"""Issue 18 item 15c: ``build -q`` prints the bundle's path and nothing else (no tables, no notes)."""

from __future__ import annotations

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _fixed_batch_onnx(path):
    """A Relu on a fixed [2, 4] input: the build notes the fixed batch, which -q must not print."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_quiet_build_prints_only_the_bundle_path(cli_run, tmp_path):
    model = _fixed_batch_onnx(tmp_path / "relu.onnx")
    code, out, err = cli_run("build", str(model), "--profile", "cpu", "--precision", "fp32", "-q",
                             "-o", str(tmp_path / "relu.xinfer"))
    assert code == 0, err
    assert out.splitlines() == [str(tmp_path / "relu.xinfer")]
    assert err == ""
