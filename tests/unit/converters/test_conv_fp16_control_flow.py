"""FP16 of a graph with an If whose branches hold initializers of the same name (Silero VAD after onnxslim):
the converter used to assert or to break the branches; the If now stays FP32 and the graph runs."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _if_model():
    from onnx import TensorProto, helper, numpy_helper

    def branch(name, value):
        c = numpy_helper.from_array(np.full(4, value, np.float32), "c")  # the same name in both branches
        return helper.make_graph([helper.make_node("Add", ["x", "c"], [f"{name}_out"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [None, 4])], [c])

    nodes = [helper.make_node("Equal", ["sr", "k16"], ["is16"]),
             helper.make_node("If", ["is16"], ["y"], then_branch=branch("then", 1.0), else_branch=branch("else", 2.0))]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
                                       helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                          [numpy_helper.from_array(np.array(16000, np.int64), "k16")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_if_stays_fp32_and_the_converted_graph_runs(tmp_path):
    from xinfer_sdk.converters.fp16 import convert, unique_subgraph_initializers

    model = _if_model()
    converted, blocked = convert(model)
    assert "If" in blocked
    path = tmp_path / "fp16.onnx"
    onnx.save(converted, str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x, "sr": np.array(16000, np.int64)})[0], x + 1)
    np.testing.assert_array_equal(sess.run(None, {"x": x, "sr": np.array(8000, np.int64)})[0], x + 2)
    assert unique_subgraph_initializers(_if_model()) == 1  # the else branch's "c" was renamed
