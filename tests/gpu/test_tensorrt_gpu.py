"""Real TensorRT on a real GPU: build engines from the graphs our steps make, run them, compare with ONNX
Runtime CPU, and check the engine's layer precisions (TensorRT's engine inspector) match what was asked.

On TensorRT 11 (strongly typed) the fp16/bf16 bundles carry FP16/BF16 graphs (converters/fp16.py, bf16.py);
an FP32 graph labelled fp16 must fail the build, not pass as an FP32 engine (review D2/D9).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gpu_models import compute_capability, make_bundle, mlp_onnx, ort_reference, tolerance, trt_major

from xinfer_sdk.accel.nvidia.engine_plan import EngineKey, make_build_plan
from xinfer_sdk.bundle import TensorSpec, open_bundle
from xinfer_sdk.errors import ConversionError
from xinfer_sdk.profiles import load_profile

pytestmark = pytest.mark.gpu


def run(bundle, xs, device="cuda:0"):
    from xinfer_sdk.runtime.backends.tensorrt import TensorRTBackend

    with TensorRTBackend(bundle, profile=load_profile("a10"), device=device) as be:
        return [be.infer({"x": x})["y"] for x in xs], be.describe()


def close(y, ref, precision):
    scale = float(np.abs(ref).max()) or 1.0
    np.testing.assert_allclose(y, ref, atol=tolerance(precision) * scale, rtol=0)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_engine_matches_onnxruntime_cpu_on_dynamic_batches(trt_ready, tmp_path, precision):
    if precision == "bf16" and compute_capability() < (8, 0):
        pytest.skip("BF16 needs compute capability 8.0 or newer")
    root = make_bundle(tmp_path / "b.xinfer", precision)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((n, 256)).astype(np.float32) for n in (1, 5, 32, 3)]
    outs, info = run(open_bundle(root), xs)
    assert info["engine_source"] == "built" and info["precision"] == precision
    for x, y in zip(xs, outs):
        ref = ort_reference(root / "reference.onnx", x)
        assert y.shape == ref.shape and y.dtype == np.float32
        close(y, ref, precision)


@pytest.mark.parametrize("precision, want", [("fp16", "fp16"), ("bf16", "bf16"), ("fp32", "fp32")])
def test_engine_layer_precisions_are_what_was_asked(trt_ready, tmp_path, precision, want):
    from xinfer_sdk.converters.tensorrt_engine import build_engine

    if precision == "bf16" and compute_capability() < (8, 0):
        pytest.skip("BF16 needs compute capability 8.0 or newer")
    root = make_bundle(tmp_path / "b.xinfer", precision)
    res = build_engine(root / "model.onnx", open_bundle(root).manifest.engine_plan, tmp_path / "out",
                       log=lambda m: None)
    lp = res["layer_precisions"]
    assert lp["verdict"] == "ok", lp  # "unverified" here means the inspector gave no formats: look at lp
    assert lp["share"].get(want, 0) > 0, lp


def test_fp16_label_on_an_fp32_graph_fails_on_tensorrt_11(trt_ready, tmp_path):
    from xinfer_sdk.converters.tensorrt_engine import build_engine

    if trt_major() < 11:
        pytest.skip("TensorRT 10 has the FP16 flag: an FP32 graph with the flag builds FP16 kernels")
    model = mlp_onnx(tmp_path / "fp32.onnx")
    plan = make_build_plan(profile=load_profile("a10"), precision="fp16",
                           inputs=[TensorSpec("x", "float32", (-1, 256))], max_batch_size=8)  # graph not recorded
    with pytest.raises(ConversionError, match="requested fp16 precision did not happen"):
        build_engine(model, plan, tmp_path / "out", log=lambda m: None)
    assert not list((tmp_path / "out").glob("*.plan"))


def test_second_activate_loads_the_cached_plan(trt_ready, tmp_path):
    from xinfer_sdk.runtime.backends.tensorrt import TensorRTBackend

    root = make_bundle(tmp_path / "b.xinfer", "fp16")
    x = np.random.default_rng(3).standard_normal((2, 256)).astype(np.float32)
    first, info1 = run(open_bundle(root), [x])
    assert info1["engine_source"] == "built"
    TensorRTBackend._engines.clear()
    bundle = open_bundle(root)  # verifies the engine's checksum recorded by the first activate
    assert [a.path for a in bundle.manifest.artifacts_by_role("engine")] == [f"engines/{info1['key']}.plan"]
    second, info2 = run(bundle, [x])
    assert info2["engine_source"] == "bundle" and info2["build_seconds"] is None
    # TensorRT does not promise bitwise-equal results across contexts; tactics are the same plan
    np.testing.assert_allclose(first[0], second[0], rtol=1e-3, atol=1e-3 * float(np.abs(first[0]).max()))


def test_corrupted_plan_is_rebuilt_not_a_crash(trt_ready, tmp_path):
    from xinfer_sdk.runtime.backends.tensorrt import TensorRTBackend

    root = make_bundle(tmp_path / "b.xinfer", "fp32")
    x = np.random.default_rng(2).standard_normal((4, 256)).astype(np.float32)
    _, info = run(open_bundle(root), [x])
    TensorRTBackend._engines.clear()
    plan_file = root / "engines" / f"{info['key']}.plan"
    plan_file.write_bytes(plan_file.read_bytes()[: plan_file.stat().st_size // 2])  # truncated
    open_bundle(root, verify=False).add_artifact(plan_file, role="engine")  # even with a matching checksum
    outs, info2 = run(open_bundle(root), [x])
    assert info2["engine_source"] == "built"
    close(outs[0], ort_reference(root / "reference.onnx", x), "fp32")


def test_static_shape_model_builds_with_an_empty_profile(trt_ready, tmp_path):
    root = make_bundle(tmp_path / "s.xinfer", "fp16", static_batch=4)
    assert open_bundle(root).manifest.engine_plan["profiles"] == [{}]
    x = np.random.default_rng(4).standard_normal((4, 256)).astype(np.float32)
    outs, info = run(open_bundle(root), [x])
    close(outs[0], ort_reference(root / "reference.onnx", x), "fp16")


def test_build_engine_directly(trt_ready, tmp_path):
    from xinfer_sdk.converters.tensorrt_engine import build_engine

    root = make_bundle(tmp_path / "b.xinfer", "fp16")
    plan = open_bundle(root).manifest.engine_plan
    lines: list[str] = []
    res = build_engine(root / "model.onnx", plan, tmp_path / "out", log=lines.append)
    major, minor = compute_capability()
    key = EngineKey.parse(Path(res["path"]).name)
    assert key is not None and key.target == f"sm{major}{minor}" and key.precision == "fp16"
    assert res["compute_capability"] == f"{major}.{minor}" and Path(res["path"]).stat().st_size > 0
    assert res["timing_cache"] and Path(res["timing_cache"]).stat().st_size > 0
    assert lines[0].startswith(f"TensorRT {res['tensorrt_version']}: building") and "built" in lines[-1]
    assert any("layer precisions" in ln for ln in lines)
