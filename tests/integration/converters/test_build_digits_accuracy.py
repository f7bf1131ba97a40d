"""A real accuracy test on real data: the digits classifier (scikit-learn's load_digits, trained in the
fixture) built FP32 -> INT8; true accuracy measured here with ONNX Runtime on the bundle's own graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import xinfer_sdk as xs


def _session(path, *, exact: bool = False):
    """exact: ONNX Runtime runs the Q/DQ nodes as written (the graph's INT8 arithmetic), not fused into its INT8
    kernels, which on x86 without VNNI/AMX saturate in 16 bits."""
    options = ort.SessionOptions()
    if exact:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _accuracy(bundle, eval_npz) -> float:
    data = np.load(eval_npz)
    pred = _session(bundle.model_file, exact=True).run(None, {"input": data["input"]})[0].argmax(1)
    return float((pred == data["labels"]).mean())


def _qdq(bundle):
    model = onnx.load(str(bundle.model_file))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    zps = [inits[n.input[2]] for n in model.graph.node
           if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits]
    return model, zps


@pytest.mark.parametrize("profile", ["cpu", "t4"])
def test_int8_stays_within_one_point_of_fp32(digits, tmp_path, profile):
    seen = []
    bundle = xs.build(digits.onnx, profile, "int8", calib=digits.calib, eval=digits.eval, output=tmp_path / "d.xinfer",
                      progress=lambda done, total, label: seen.append((done, total, label)))
    acc = _accuracy(bundle, digits.eval)
    assert digits.fp32_accuracy > 0.9  # the classifier really learned
    assert acc >= digits.fp32_accuracy - 0.01, (acc, digits.fp32_accuracy)
    report = bundle.manifest.accuracy
    assert report["passed"] and report["labels"] and report["samples"] == 297
    assert abs(report["true_accuracy"]["converted"] - acc) < 1e-9  # the gate measured what we measure
    assert abs(report["true_accuracy"]["reference"] - digits.fp32_accuracy) < 0.004  # ORT FP32 == torch FP32
    model, zps = _qdq(bundle)
    assert sum(n.op_type == "DequantizeLinear" for n in model.graph.node) >= 3 and zps
    assert seen and seen[-1][0] == seen[-1][1] == 256 and seen[0][2] == "calibrating"


def test_gpu_profiles_get_symmetric_int8_with_zero_points_zero(digits, tmp_path):
    bundle = xs.build(digits.onnx, "jetson-orin-nx-16gb", "int8", calib=digits.calib, output=tmp_path / "j.xinfer")
    _, zps = _qdq(bundle)
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    cal = bundle.manifest.calibration
    assert (cal["scheme"], cal["activation_type"], cal["weight_type"], cal["zero_points"]) == (
        "symmetric", "int8", "int8", "all 0")


def test_gate_runs_the_graphs_int8_arithmetic_whatever_the_build_hosts_kernels(digits, tmp_path):
    """The symmetric TensorRT graph is gated on its own arithmetic (int8 products, no 16-bit saturation), so its
    figures are the same on every build host; the held-out split is the one that failed on an AVX2-only host
    when the gate ran ONNX Runtime's fused s8s8 kernels (top-1 agreement 0.9333, logits cosine 0.98)."""
    bundle = xs.build(digits.onnx, "t4", "int8", calib=digits.calib, output=tmp_path / "t.xinfer")
    report = bundle.manifest.accuracy
    assert report["passed"] and "QDQ fusion off" in report["compared"] and "host_kernels" not in report
    held_out = np.load(digits.calib)["input"][-report["samples"]:]
    ref = _session(bundle.path("reference.onnx")).run(None, {"input": held_out})[0].astype(np.float64)
    got = _session(bundle.model_file, exact=True).run(None, {"input": held_out})[0].astype(np.float64)
    cosine = float(np.dot(ref.ravel(), got.ravel()) / np.linalg.norm(ref) / np.linalg.norm(got))
    assert abs(report["outputs"]["logits"]["cosine"] - cosine) < 1e-6  # fused s8s8 on AVX2 is 0.018 off
    assert report["outputs"]["logits"]["top1_agreement"] == float(np.mean(ref.argmax(1) == got.argmax(1)))
    assert cosine > 0.999  # symmetric per-channel INT8 of a 3-layer MLP loses next to nothing


def test_cpu_profile_uses_u8_activations_s8_weights(digits, tmp_path):
    bundle = xs.build(digits.onnx, "cpu", "int8", calib=digits.calib, output=tmp_path / "c.xinfer")
    _, zps = _qdq(bundle)
    dtypes = {z.dtype for z in zps}
    assert dtypes == {np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int32)}  # int32: quantized biases
    assert any(z.dtype == np.uint8 and z.any() for z in zps)  # asymmetric activations
    assert all(not z.any() for z in zps if z.dtype != np.uint8)  # symmetric weights and biases


def test_calibration_split_methods_and_provenance(digits, tmp_path):
    bundle = xs.build(digits.onnx, "cpu", "int8", calib=digits.calib, output=tmp_path / "p.xinfer",
                      calib_method="percentile", calib_samples=100, per_channel=False)
    cal, acc = bundle.manifest.calibration, bundle.manifest.accuracy
    # no --eval: 20% of what was read (125 samples for 100 calibration samples) is held out, never calibrated on
    assert cal["samples"] == 100 and cal["held_out_for_gate"] == 25 and acc["samples"] == 25
    assert cal["method"] == "percentile" and cal["per_channel"] is False
    assert cal["source"]["kind"] == "npz" and len(cal["source"]["sha256"]) == 64 and len(cal["data_sha256"]) == 64
    assert acc["passed"] and acc["true_accuracy"]["drop"] <= 0.01
    entropy = xs.build(digits.onnx, "cpu", "int8", calib=digits.calib, eval=digits.eval, calib_method="entropy",
                       calib_samples=64, output=tmp_path / "e.xinfer")
    assert entropy.manifest.calibration["method"] == "entropy" and entropy.manifest.accuracy["passed"]


def test_digits_cnn_int8_for_t4_stays_within_one_point_of_fp32(digits_cnn, tmp_path):
    """The conv path of symmetric INT8 (per-channel Conv weights), on real digits: true accuracy within a point."""
    bundle = xs.build(digits_cnn.onnx, "t4", "int8", calib=digits_cnn.calib, eval=digits_cnn.eval,
                      output=tmp_path / "c.xinfer")
    model, zps = _qdq(bundle)
    assert any(n.op_type == "Conv" for n in model.graph.node) and zps and all(not z.any() for z in zps)
    acc = _accuracy(bundle, digits_cnn.eval)
    assert digits_cnn.fp32_accuracy > 0.95 and acc >= digits_cnn.fp32_accuracy - 0.01, (acc, digits_cnn.fp32_accuracy)
    assert bundle.manifest.accuracy["passed"]
