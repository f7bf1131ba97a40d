"""Tiny real ONNX models for the tests, made in-process (no downloads). tests/ is on sys.path (tests/conftest.py)."""

from __future__ import annotations

import numpy as np


def make_types_onnx(path):
    """FP16, BOOL, INT64 and STRING inputs, each with its own output (h*2, not flag, ids+1, text)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def vi(name, t, dims):
        return helper.make_tensor_value_info(name, t, ["batch", *dims])

    nodes = [helper.make_node("Mul", ["h", "two"], ["h2"]), helper.make_node("Not", ["flag"], ["nflag"]),
             helper.make_node("Add", ["ids", "one"], ["ids1"]), helper.make_node("Identity", ["text"], ["text_out"])]
    graph = helper.make_graph(
        nodes, "types",
        [vi("h", TensorProto.FLOAT16, [3]), vi("flag", TensorProto.BOOL, [2]), vi("ids", TensorProto.INT64, [2]),
         vi("text", TensorProto.STRING, [1])],
        [vi("h2", TensorProto.FLOAT16, [3]), vi("nflag", TensorProto.BOOL, [2]), vi("ids1", TensorProto.INT64, [2]),
         vi("text_out", TensorProto.STRING, [1])],
        [numpy_helper.from_array(np.array(2, np.float16), "two"), numpy_helper.from_array(np.array(1, np.int64), "one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_mlp_onnx(path, n_in=8, hidden=16, n_out=4, seed=0):
    """Same shape of model as the runtime tests' MLP: input [batch, 8] FP32 -> output [batch, 4]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((n_in, hidden)).astype(np.float32)
    b1 = rng.standard_normal(hidden).astype(np.float32)
    w2 = rng.standard_normal((hidden, n_out)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["output"])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", n_out])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))

    def reference(x):
        return np.maximum(x @ w1 + b1, 0) @ w2

    return reference
