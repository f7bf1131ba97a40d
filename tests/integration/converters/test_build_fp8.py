"""FP8 (E4M3) explicit quantization: the digits classifier and the transformer encoder built fp8 for FP8 GPUs,
the accuracy gate executing the float8 Q/DQ graph on ONNX Runtime's CPU provider, and the refusals where the
hardware has no FP8."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from xinfer_sdk.converters import fp8

import xinfer_sdk as xs
from xinfer_sdk.bundle import open_bundle
from xinfer_sdk.errors import ConversionError

SHAPES = "input_ids:1x4..8x16..32x64,attention_mask:1x4..8x16..32x64"


def _session(path, *, rewrites: bool = False):
    """The gate's session: Q/DQ as written (QDQ fusion off), ONNX Runtime's Relu/Clip-before-Q rewrites off."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    disabled = None if rewrites else list(fp8.ORT_DISABLED_OPTIMIZERS)
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def _qdq(model):
    inits = {t.name: t for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    return nodes, inits


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _assert_e4m3_graph(bundle, per_channel_weights: bool):
    model = onnx.load(str(bundle.model_file))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 19
    nodes, inits = _qdq(model)
    assert nodes and all(n.input[2] in inits and inits[n.input[2]].data_type == T.FLOAT8E4M3FN for n in nodes)
    assert all(not nh.to_array(inits[n.input[2]]).astype(np.float32).any() for n in nodes)  # zero points 0
    weights = [n for n in nodes if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weights and all(inits[n.input[0]].data_type == T.FLOAT8E4M3FN for n in weights)  # stored in FP8
    assert all((inits[n.input[1]].dims[0] > 1 if inits[n.input[1]].dims else False) == per_channel_weights
               for n in weights)
    acts = [n for n in nodes if n.op_type == "QuantizeLinear"]
    assert acts and all(not inits[n.input[1]].dims for n in acts)  # activations per tensor
    consumers = {i: n.op_type for n in model.graph.node for i in n.input}
    assert {consumers[n.output[0]] for n in nodes if n.op_type == "DequantizeLinear"} <= set(fp8.OP_TYPES)
    return model


def test_digits_fp8_for_h100_passes_the_executed_fp8_gate(digits, tmp_path):
    bundle = xs.build(digits.onnx, "h100-sxm", "fp8", calib=digits.calib, eval=digits.eval, output=tmp_path / "d.xinfer",
                      build_engine=False)
    m = bundle.manifest
    assert m.precision == "fp8"
    steps = {s.name: s for s in m.steps}
    assert steps["fp8"].status == "ok" and steps["int8"].status == "skipped" and "E4M3" in steps["fp8"].message
    report = m.accuracy
    assert report["passed"] and report["precision"] == "fp8" and "FP8 arithmetic" in report["compared"]
    assert report["samples"] == 297 and report["labels"]
    assert report["thresholds"] == {"min_cosine": 0.98, "min_top1_agreement": 0.95, "max_abs_error": None,
                                    "max_accuracy_drop": 0.01}  # the fp8 defaults of the h100-sxm profile
    _assert_e4m3_graph(bundle, per_channel_weights=True)
    cal = m.calibration
    assert (cal["element_type"], cal["activations"], cal["weights"], cal["method"], cal["scale"]) == (
        "float8e4m3fn", "per-tensor", "per-channel", "minmax", "amax / 448")
    assert cal["samples"] == 256 and cal["held_out_for_gate"] == 0 and cal["upgraded_from_opset"] == 17
    # the gate executed the FP8 graph: its figures are what ONNX Runtime computes from the bundle's own file
    data = np.load(digits.eval)
    ref = _session(bundle.path("reference.onnx")).run(None, {"input": data["input"]})[0]
    got = _session(bundle.model_file).run(None, {"input": data["input"]})[0]
    assert abs(report["outputs"]["logits"]["cosine"] - _cosine(ref, got)) < 1e-6
    acc = float(np.mean(got.argmax(1) == data["labels"]))
    assert abs(report["true_accuracy"]["converted"] - acc) < 1e-9
    assert acc >= digits.fp32_accuracy - 0.01, (acc, digits.fp32_accuracy)
    # ...and FP8 is not FP32: E4M3 keeps 3 mantissa bits, the logits move measurably
    assert float(np.abs(ref - got).max()) > 1e-3 and _cosine(ref, got) < 0.99999


def test_the_gate_runs_without_onnx_runtimes_relu_rewrite_that_is_wrong_for_float8(digits, tmp_path):
    """ONNX Runtime 1.32's ReluQuantRewrite drops a Relu that feeds a float8 QuantizeLinear (right for uint8 with zero
    point 0, wrong for E4M3, which keeps negatives). TensorRT computes the Relu; so does the gate."""
    bundle = xs.build(digits.onnx, "h100-sxm", "fp8", calib=digits.calib, eval=digits.eval, output=tmp_path / "d.xinfer",
                      build_engine=False)
    x = np.load(digits.eval)["input"]
    ref = _session(bundle.path("reference.onnx")).run(None, {"input": x})[0]
    gate = _session(bundle.model_file).run(None, {"input": x})[0]
    rewritten = _session(bundle.model_file, rewrites=True).run(None, {"input": x})[0]
    assert _cosine(ref, gate) > 0.999 > _cosine(ref, rewritten)


@pytest.mark.parametrize("profile", ["h100-sxm", "b200", "l40s"])
def test_transformer_fp8_passes_the_gate_per_tensor_weights(transformer, models, tmp_path, profile):
    bundle = xs.build(transformer.onnx, profile, "fp8", calib=transformer.calib, eval=transformer.eval, shapes=SHAPES,
                      output=tmp_path / "tr.xinfer", per_channel=False, build_engine=False)
    m = bundle.manifest
    assert m.accuracy["passed"] and set(m.accuracy["outputs"]) == {"logits", "hidden"}
    assert m.accuracy["outputs"]["hidden"]["cosine"] > 0.999
    assert m.calibration["weights"] == "per-tensor" and m.calibration["per_channel"] is False
    model = _assert_e4m3_graph(bundle, per_channel_weights=False)
    assert sum(n.op_type == "MatMul" for n in model.graph.node) >= 8  # attention and MLP matmuls are quantized
    plan = m.engine_plan
    assert plan["precision"] == "fp8" and plan["graph"] == "fp8"
    assert all(v == {"supported": True, "network": "strongly_typed", "set_flags": [], "clear_flags": [],
                     "note": v["note"]} for v in plan["per_major"].values()), plan["per_major"]
    # a batch and sequence length the calibration never saw
    feeds = models.token_batch(3, 40, seed=9)
    got = _session(bundle.model_file).run(None, feeds)
    ref = ort.InferenceSession(str(bundle.path("reference.onnx")), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert got[1].shape == (3, 40, 32) and _cosine(got[1], ref[1]) > 0.99


@pytest.mark.parametrize("profile, reason", [
    ("t4", "T4 (sm_75) has no FP8 tensor cores"),
    ("a100-sxm4-80gb", "has no FP8 tensor cores"),
    ("jetson-agx-orin-64gb", "has no FP8 tensor cores"),
])
def test_profiles_without_fp8_refuse_it_with_the_reason(cli_run, digits, one_error_line, profile, reason):
    code, _, err = cli_run("build", str(digits.onnx), "--profile", profile, "--precision", "fp8", "--calib",
                           str(digits.calib), "-q")
    assert code == 2 and reason in one_error_line(err)


def test_fp8_build_from_the_cli_records_the_scheme(cli_run, digits, tmp_path):
    out = tmp_path / "cli.xinfer"
    code, _, err = cli_run("build", str(digits.onnx), "--profile", "l4", "--precision", "fp8", "--calib",
                           str(digits.calib), "--calib-method", "percentile", "-o", str(out), "--no-engine", "-q")
    assert code == 0, err
    m = open_bundle(out).manifest
    assert m.calibration["method"] == "percentile" and m.calibration["element_type"] == "float8e4m3fn"
    assert m.accuracy["passed"] and m.accuracy["samples"] == 60  # held out of --calib (300 x 0.2)


def test_to_fp8_rescales_ranges_and_stores_weights_in_e4m3():
    """A hand-made symmetric INT8 Q/DQ graph (scales amax / 127) becomes E4M3 (amax / 448), weights computed once."""
    w = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
    inits = [nh.from_array(w, "w"), nh.from_array(np.array([1.0 / 127, 2.0 / 127], np.float32), "ws"),
             nh.from_array(np.zeros(2, np.int8), "wz"), nh.from_array(np.array(4.0 / 127, np.float32), "xs"),
             nh.from_array(np.array(0, np.int8), "xz")]
    nodes = [h.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             h.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             h.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], axis=0),
             h.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
             h.make_node("Gemm", ["xd", "wd"], ["y"], transB=1)]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 2])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 2])], inits)
    model, counts = fp8.to_fp8(h.make_model(g, opset_imports=[h.make_opsetid("", 19)], ir_version=9))
    onnx.checker.check_model(model)
    assert counts == {"qdq_nodes": 3, "fp8_weights": 1, "activation_quantizers": 1}
    by = {t.name: t for t in model.graph.initializer}
    assert "w" not in by and by["wq"].data_type == T.FLOAT8E4M3FN
    np.testing.assert_allclose(nh.to_array(by["xs"]), 4.0 / 448, rtol=1e-7)
    np.testing.assert_allclose(nh.to_array(by["ws"]), [1.0 / 448, 2.0 / 448], rtol=1e-7)
    x = np.array([[4.0, -4.0], [1.0, 2.0]], np.float32)
    y = _session(model.SerializeToString()).run(None, {"x": x})[0]
    # row amax of w maps to 448: each weight lands on the E4M3 grid exactly here, x too (4 -> 448, 1 -> 112, 2 -> 224)
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-6)


def test_ort_cpu_executes_float8_qdq_at_opset_19_and_rounds_like_tensorrt():
    """Why the gate can execute FP8 on a CPU: ONNX Runtime runs float8 QuantizeLinear / DequantizeLinear (opset 19),
    castToFp8(clip(x / s, -448, 448)) with ties to even, as TensorRT defines FP8 quantization."""
    g = h.make_graph([h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                      h.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [None])], [h.make_tensor_value_info("y", T.FLOAT, [None])],
                     [nh.from_array(np.array(1.0, np.float32), "s"), h.make_tensor("z", T.FLOAT8E4M3FN, [], [0.0])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 19)], ir_version=9)
    x = np.array([168.0, 184.0, 13.5, 500.0, -1000.0, 0.3], np.float32)
    y = _session(m.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, np.array([160.0, 192.0, 14.0, 448.0, -448.0, 0.3125], np.float32))


def test_an_fp8_bundle_served_by_onnx_runtime_on_cpu_computes_what_the_gate_measured(digits, tmp_path):
    """The onnxruntime backend (the fallback where TensorRT is missing) runs FP8 bundles without the float8-unsafe
    rewrites too: with ReluQuantRewrite on, this bundle's logits cosine drops to about 0.97."""
    bundle = xs.build(digits.onnx, "h100-sxm", "fp8", calib=digits.calib, eval=digits.eval, output=tmp_path / "d.xinfer",
                      build_engine=False)
    x = np.load(digits.eval)["input"][:64]
    ref = _session(bundle.path("reference.onnx")).run(None, {"input": x})[0]
    with xs.load(bundle.root, profile="h100-sxm", device="cpu", backend="onnxruntime") as m:
        y = m.infer({"input": x})["logits"]
    np.testing.assert_allclose(y, _session(bundle.model_file).run(None, {"input": x})[0], rtol=1e-5, atol=1e-5)
    assert _cosine(ref, y) > 0.999


def _conv_net(path, opset=17):
    rng = np.random.default_rng(0)
    inits = [nh.from_array(rng.normal(size=(16, 3, 3, 3)).astype(np.float32), "W"),
             nh.from_array(rng.normal(size=(16,)).astype(np.float32), "B"),
             nh.from_array(rng.normal(size=(16, 5)).astype(np.float32), "M")]
    nodes = [h.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c"], ["r"]),
             h.make_node("GlobalAveragePool", ["r"], ["p"]), h.make_node("Flatten", ["p"], ["f"]),
             h.make_node("MatMul", ["f", "M"], ["y"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 5])], initializer=inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=8), str(path))
    return path


def test_conv_weights_are_per_output_channel_and_the_bias_stays_fp32(tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).normal(size=(64, 3, 8, 8)).astype(np.float32))
    bundle = xs.build(_conv_net(tmp_path / "conv.onnx"), "l40s", "fp8", calib=calib, output=tmp_path / "c.xinfer",
                      build_engine=False)
    assert bundle.manifest.accuracy["passed"] and bundle.manifest.accuracy["samples"] == 13  # held out of --calib
    model = _assert_e4m3_graph(bundle, per_channel_weights=True)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    inits = {t.name: t for t in model.graph.initializer}
    assert inits[conv.input[2]].data_type == T.FLOAT  # bias: FP32, no Q/DQ
    dq = next(n for n in model.graph.node if n.output[0] == conv.input[1])
    assert list(inits[dq.input[0]].dims) == [16, 3, 3, 3] and list(inits[dq.input[1]].dims) == [16]


def test_a_graph_with_nothing_fp8_can_run_is_refused(tmp_path):
    g = h.make_graph([h.make_node("Relu", ["x"], ["r"]), h.make_node("Add", ["r", "x"], ["y"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])], [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])])
    path = tmp_path / "r.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8), str(path))
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.ones((8, 4), np.float32))
    with pytest.raises(ConversionError, match="FP8 quantization found nothing to quantize"):
        xs.build(path, "h100-sxm", "fp8", calib=calib, output=tmp_path / "r.xinfer", build_engine=False)


@pytest.mark.parametrize("profile", ["h100-sxm", "l40s"])
def test_digits_cnn_fp8_keeps_its_accuracy_through_the_executed_gate(digits_cnn, tmp_path, profile):
    """The conv path: per-output-channel FP8 Conv weights, per-tensor FP8 activations, executed on ONNX Runtime CPU;
    the true accuracy on the 297 held-out digits stays within a point of FP32."""
    bundle = xs.build(digits_cnn.onnx, profile, "fp8", calib=digits_cnn.calib, eval=digits_cnn.eval,
                      output=tmp_path / "c.xinfer", build_engine=False)
    model = _assert_e4m3_graph(bundle, per_channel_weights=True)
    assert {n.op_type for n in model.graph.node} >= {"Conv", "Gemm"} or {n.op_type for n in model.graph.node} >= {
        "Conv", "MatMul"}
    report = bundle.manifest.accuracy
    assert report["passed"] and report["samples"] == 297
    data = np.load(digits_cnn.eval)
    got = _session(bundle.model_file).run(None, {"input": data["input"]})[0]
    acc = float(np.mean(got.argmax(1) == data["labels"]))
    assert digits_cnn.fp32_accuracy > 0.95 and acc >= digits_cnn.fp32_accuracy - 0.01, (acc, digits_cnn.fp32_accuracy)
    assert abs(report["true_accuracy"]["converted"] - acc) < 1e-9
