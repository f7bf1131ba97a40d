"""Shape arithmetic that ONNX shape inference cannot follow is folded to values, so every node is costed; a node
that still cannot be sized is named, with its share, in a warning of the plan."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from xinfer_sdk.graph import analyze  # noqa: E402
from xinfer_sdk.shapes import parse_shapes  # noqa: E402

D, HEADS = 8, 2


def arange_attention_proto():
    """What PyTorch exports for ``x + pos[arange(x.shape[1])]`` then ``x.reshape(b, s, h, d // h)`` and the
    two attention products: Shape -> Gather -> Cast -> Range, and a Concat of Div-ided shape elements."""
    def c(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.int64)))

    nodes = [
        helper.make_node("Shape", ["x"], ["shp"]), c("one", 1), c("zero", 0), c("step", 1), c("two", 2),
        c("heads", HEADS), c("axes0", [0]),
        helper.make_node("Gather", ["shp", "one"], ["s"], axis=0),
        helper.make_node("Gather", ["shp", "zero"], ["b"], axis=0),
        helper.make_node("Gather", ["shp", "two"], ["d"], axis=0),
        helper.make_node("Cast", ["s"], ["s64"], to=TensorProto.INT64),
        helper.make_node("Range", ["zero", "s64", "step"], ["idx"]),
        helper.make_node("Unsqueeze", ["idx", "axes0"], ["idx2"]),
        helper.make_node("Gather", ["pos", "idx2"], ["pe"], axis=0),
        helper.make_node("Add", ["x", "pe"], ["h"]),
        helper.make_node("Div", ["d", "heads"], ["dh"]),
        *[helper.make_node("Unsqueeze", [v, "axes0"], [v + "_1"]) for v in ("b", "s", "heads", "dh")],
        helper.make_node("Concat", ["b_1", "s_1", "heads_1", "dh_1"], ["newshape"], axis=0),
        helper.make_node("Reshape", ["h", "newshape"], ["r"]),
        helper.make_node("Transpose", ["r"], ["q"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["r"], ["kt"], perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "q"], ["y"]),
    ]
    g = helper.make_graph(nodes, "arange", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "S", D])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", HEADS, "S", D // HEADS])],
                          [numpy_helper.from_array(np.zeros((64, D), np.float32), "pos")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def opaque_proto():
    """A custom-domain op with no shape function, then a MatMul and a Relu that depend on its shape."""
    nodes = [helper.make_node("Opaque", ["x"], ["y"], domain="my.ops", name="mystery"),
             helper.make_node("MatMul", ["y", "w"], ["z"], name="proj"),
             helper.make_node("Relu", ["z"], ["out"], name="act"),
             helper.make_node("MatMul", ["x", "w"], ["side"], name="side_proj")]
    g = helper.make_graph(nodes, "opaque", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4]),
                           helper.make_tensor_value_info("side", TensorProto.FLOAT, ["N", 4])],
                          [numpy_helper.from_array(np.ones((8, 4), np.float32), "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)])


def test_shape_arithmetic_is_folded_and_every_node_costed():
    s = 16
    cost = analyze(arange_attention_proto(), batch_size=2, shapes=parse_shapes(f"x:1x{s}x{D}"), which="opt")
    assert cost.unknown == ()
    mm = [o for o in cost.ops if o.op_type == "MatMul"]
    # QK^T: 2 x heads x s x s x dh MACs; AV the same
    assert [o.flops for o in mm] == [2.0 * 2 * HEADS * s * s * (D // HEADS)] * 2
    assert all(o.known for o in cost.ops)


def test_folded_shape_arithmetic_costs_nothing_on_the_device():
    cost = analyze(arange_attention_proto(), batch_size=1, shapes=parse_shapes(f"x:1x16x{D}"), which="opt")
    by_name = {o.op_type + ":" + o.name: o for o in cost.ops}
    shape_ops = [o for k, o in by_name.items() if k.split(":")[0] in ("Range", "Concat", "Div")]
    assert shape_ops and all(o.op_class == "shape" and o.bytes == 0 for o in shape_ops)


def test_an_uncostable_node_is_named_with_its_share_in_a_warning():
    cost = analyze(opaque_proto(), batch_size=1, which="opt")
    text = cost.uncosted_warning()
    assert "3 of 4 nodes (75%)" in text
    assert "1 of 2 matrix op(s)" in text
    for name in ("mystery (Opaque)", "proj (MatMul)", "act (Relu)"):
        assert name in text
    assert "side_proj" not in text


def test_plan_output_carries_the_warning(cli_run, tmp_path):
    p = tmp_path / "opaque.onnx"
    onnx.save(opaque_proto(), p)
    code, out, _ = cli_run("plan", str(p), "--profile", "t4")
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("WARNING"))
    assert "3 of 4 nodes" in line and "proj (MatMul)" in line
    code, out, _ = cli_run("plan", str(p), "--profile", "t4", "--json")
    data = json.loads(out)
    assert len(data["warnings"]) == 1 and "mystery (Opaque)" in data["warnings"][0]
    assert data["profiles"][0]["cost"]["uncosted_nodes"] == ["mystery (Opaque)", "proj (MatMul)", "act (Relu)"]
