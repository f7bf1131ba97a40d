"""BF16: the graph conversion (ONNX schemas decide per op), the emulated accuracy gate, and a bf16 build.

ONNX Runtime's CPU provider has no BF16 kernels besides Cast (checked below), so the gate runs the BF16 graph
emulated in FP32 arithmetic with BF16 rounding; these tests show the emulation measures BF16, not FP32.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from xinfer_sdk.converters import bf16

import xinfer_sdk as xs
from tests.onnx_models import make_mlp_onnx
from xinfer_sdk.errors import ConversionError


def run(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def conv_net(opset=17):
    rng = np.random.default_rng(0)
    inits = [nh.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "W"),
             nh.from_array(rng.normal(size=(8,)).astype(np.float32), "B"),
             nh.from_array(rng.normal(size=(8, 5)).astype(np.float32), "M")]
    nodes = [h.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c"], ["r"]),
             h.make_node("GlobalAveragePool", ["r"], ["p"]), h.make_node("Flatten", ["p"], ["f"]),
             h.make_node("MatMul", ["f", "M"], ["mm"]), h.make_node("Softmax", ["mm"], ["y"], axis=-1),
             h.make_node("Shape", ["r"], ["s"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 5]), h.make_tensor_value_info("s", T.INT64, [4])],
                     initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(m)
    return m


def test_bf16_rounding_is_nearest_even_and_keeps_range():
    x = np.array([1.0, 1.00390625, 1.01171875, 3.0e38, -2.5e-38, 65504.0 * 4, np.inf, np.nan], np.float32)
    r = bf16.round_to_bf16(x)
    assert r[0] == 1.0 and r[1] == 1.0  # halfway 1 + 2^-8 rounds to even (1.0)
    assert r[2] == np.float32(1.015625)  # 1 + 3*2^-8 is halfway too: rounds up to the even 1 + 2^-6
    assert np.isfinite(r[3]) and abs(r[3] / 3.0e38 - 1) < 1e-2  # BF16 has FP32's range (FP16 would overflow)
    assert r[5] == 262144.0 and np.isinf(r[6]) and np.isnan(r[7])


def test_ort_cpu_has_no_bf16_kernels_besides_cast():
    # why the gate emulates: a real BF16 MatMul does not load on ONNX Runtime's CPU provider
    g = h.make_graph([h.make_node("Cast", ["x"], ["xb"], to=T.BFLOAT16), h.make_node("MatMul", ["xb", "xb"], ["yb"]),
                      h.make_node("Cast", ["yb"], ["y"], to=T.FLOAT)], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [2, 2])], [h.make_tensor_value_info("y", T.FLOAT, [2, 2])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(Exception, match="NOT_IMPLEMENTED|Could not find an implementation"):
        run(m, {"x": np.ones((2, 2), np.float32)})


def test_conv_net_converts_with_an_opset_upgrade_and_fp32_io():
    m = conv_net(17)
    converted, rep = bf16.convert(m)
    assert rep["upgraded_from_opset"] == 17 and rep["opset"] == 22  # BF16 Conv needs opset 22
    assert rep["bf16_initializers"] == 3 and rep["no_bf16_at_opset"] == []
    kinds = {n.output[0]: n.op_type for n in converted.graph.node}
    types = {vi.name: vi.type.tensor_type.elem_type for vi in converted.graph.value_info}
    assert types["c"] == T.BFLOAT16 and types["mm"] == T.BFLOAT16  # Conv and MatMul compute in BF16
    assert [i.type.tensor_type.elem_type for i in converted.graph.input] == [T.FLOAT]
    assert [o.type.tensor_type.elem_type for o in converted.graph.output] == [T.FLOAT, T.INT64]
    assert kinds["y"] == "Cast"  # FP32 at the graph's edge
    assert not any(n.op_type == "Cast" and n.output[0].startswith("r__") for n in converted.graph.node)  # Shape reads BF16


def test_blocked_and_opset_limited_ops_stay_fp32():
    m = conv_net(17)
    converted, rep = bf16.convert(m, extra_block=("MatMul",))
    assert "MatMul" in rep["kept_fp32"]
    types = {vi.name: vi.type.tensor_type.elem_type for vi in converted.graph.value_info}
    assert types["mm"] == T.FLOAT


def test_emulated_gate_measures_bf16_not_fp32():
    m = conv_net(17)
    converted, _ = bf16.convert(m)
    emu = bf16.emulate(converted)
    x = np.random.default_rng(1).normal(size=(16, 3, 8, 8)).astype(np.float32)
    ref = run(m, {"x": x})[0]
    got = run(emu, {"x": x})[0]
    err = np.abs(ref - got).max()
    # BF16 keeps 8 significant bits: errors of order 2^-8 of the magnitudes, far above FP32 noise (~1e-7)...
    assert 1e-4 < err < 5e-2
    # ...and the same as rounding the FP32 model's weights and activations to BF16 by hand
    w = nh.to_array(m.graph.initializer[0])
    assert np.array_equal(bf16.round_to_bf16(w), nh.to_array(next(t for t in emu.graph.initializer if t.name == "W__bf16")))


def test_bf16_build_end_to_end(tmp_path):
    path = tmp_path / "mlp.onnx"
    make_mlp_onnx(path)
    bundle = xs.build(path, "h200", "bf16", output=tmp_path / "mlp.xinfer", build_engine=False)
    m = bundle.manifest
    steps = {s.name: s for s in m.steps}
    assert steps["bf16"].status == "ok" and steps["fp16"].status == "skipped"
    assert "in BF16" in steps["bf16"].message
    assert m.accuracy["passed"] and "emulated" in m.accuracy["compared"]
    assert m.engine_plan["graph"] == "bf16" and m.engine_plan["per_major"]["11"]["supported"] is True
    model = onnx.load(str(bundle.root / "model.onnx"))
    assert any(t.data_type == T.BFLOAT16 for t in model.graph.initializer)


def test_a_graph_with_nothing_in_bf16_is_refused(tmp_path):
    g = h.make_graph([h.make_node("ReduceMean", ["x"], ["y"], keepdims=0)], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])], [h.make_tensor_value_info("y", T.FLOAT, [])])
    path = tmp_path / "r.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8), str(path))
    with pytest.raises(ConversionError, match="left every op in FP32"):
        xs.build(path, "h200", "bf16", output=tmp_path / "r.xinfer", build_engine=False, max_batch_size=4)
