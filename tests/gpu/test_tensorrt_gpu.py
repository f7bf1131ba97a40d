"""Real TensorRT on a real GPU: build an engine from a tiny ONNX model, run it, compare with ONNX Runtime CPU.

Marked ``gpu``: tests/conftest.py skips them (with the reason) when no CUDA device is visible, and the
``trt_ready`` fixture skips them when TensorRT itself is not installed. None of these ran on the machine
the code was written on (no GPU there); they are the coverage of everything that touches TensorRT / CUDA.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xinfer_sdk.bundle import Manifest, TensorSpec, open_bundle, register, save_manifest
from xinfer_sdk.engine_plan import EngineKey, make_build_plan
from xinfer_sdk.profiles import load_profile

pytestmark = pytest.mark.gpu

PROFILE = load_profile("a10")  # the plan's target profile only sets policy; the engine is built for this GPU


@pytest.fixture(scope="module")
def trt_ready():
    from xinfer_sdk.converters.tensorrt_engine import unavailable_reason

    why = unavailable_reason()
    if why:
        pytest.skip(f"TensorRT not usable here: {why}")


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    from xinfer_sdk.runtime.backends.tensorrt import TensorRTBackend

    monkeypatch.setattr(TensorRTBackend, "_engines", {})
    monkeypatch.setenv("XINFER_CACHE_DIR", str(tmp_path / "user-cache"))


def tiny_onnx(path: Path) -> None:
    """x[batch, 16] -> relu(x @ W + b) @ W2 -> y[batch, 8], dynamic batch, seeded weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32) * 0.3, "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32) * 0.1, "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 8)).astype(np.float32) * 0.3, "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
                              initializer=[w1, b1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_bundle(root: Path, precision: str) -> Path:
    root.mkdir(parents=True)
    tiny_onnx(root / "model.onnx")
    inputs = [TensorSpec("x", "float32", (-1, 16), ("batch", None))]
    outputs = [TensorSpec("y", "float32", (-1, 8), ("batch", None))]
    plan = make_build_plan(profile=PROFILE, precision=precision, inputs=inputs, max_batch_size=16)
    mf = Manifest(name="tiny", inputs=inputs, outputs=outputs, precision=precision, max_batch_size=16,
                  profile={"name": PROFILE.name}, batch=PROFILE.batch.to_dict(), engine_plan=plan)
    register(root, mf, "model.onnx", role="model")
    save_manifest(root, mf)
    return root


def ort_reference(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return sess.run(["y"], {"x": x})[0]


def run(bundle, xs):
    from xinfer_sdk.runtime.backends.tensorrt import TensorRTBackend

    with TensorRTBackend(bundle, profile=PROFILE, device="cuda:0") as be:
        return [be.infer({"x": x})["y"] for x in xs], be.describe()


@pytest.mark.parametrize("precision, atol", [("fp32", 1e-4), ("fp16", 3e-2)])
def test_engine_matches_onnxruntime_cpu_on_dynamic_batches(trt_ready, tmp_path, precision, atol):
    root = make_bundle(tmp_path / "b.xinfer", precision)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((n, 16)).astype(np.float32) for n in (1, 5, 16, 3)]
    outs, info = run(open_bundle(root), xs)
    assert info["engine_source"] == "built" and info["precision"] == precision
    for x, y in zip(xs, outs):
        ref = ort_reference(root / "model.onnx", x)
        assert y.shape == ref.shape and y.dtype == np.float32
        np.testing.assert_allclose(y, ref, atol=atol, rtol=atol)


def test_second_activate_loads_the_cached_plan(trt_ready, tmp_path):
    from xinfer_sdk.runtime.backends.tensorrt import TensorRTBackend

    root = make_bundle(tmp_path / "b.xinfer", "fp16")
    x = np.ones((2, 16), np.float32)
    first, info1 = run(open_bundle(root), [x])
    assert info1["engine_source"] == "built"
    TensorRTBackend._engines.clear()
    bundle = open_bundle(root)  # verifies the engine's checksum recorded by the first activate
    assert [a.path for a in bundle.manifest.artifacts_by_role("engine")] == [f"engines/{info1['key']}.plan"]
    second, info2 = run(bundle, [x])
    assert info2["engine_source"] == "bundle" and info2["build_seconds"] is None
    np.testing.assert_array_equal(first[0], second[0])


def test_corrupted_plan_is_rebuilt_not_a_crash(trt_ready, tmp_path):
    from xinfer_sdk.runtime.backends.tensorrt import TensorRTBackend

    root = make_bundle(tmp_path / "b.xinfer", "fp32")
    x = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    _, info = run(open_bundle(root), [x])
    TensorRTBackend._engines.clear()
    plan_file = root / "engines" / f"{info['key']}.plan"
    plan_file.write_bytes(plan_file.read_bytes()[: plan_file.stat().st_size // 2])  # truncated
    open_bundle(root, verify=False).add_artifact(plan_file, role="engine")  # even with a matching checksum
    outs, info2 = run(open_bundle(root), [x])
    assert info2["engine_source"] == "built"
    np.testing.assert_allclose(outs[0], ort_reference(root / "model.onnx", x), atol=1e-4, rtol=1e-4)


def test_build_engine_directly(trt_ready, tmp_path):
    from xinfer_sdk.converters.tensorrt_engine import build_engine

    from xinfer_sdk import _cudart

    root = make_bundle(tmp_path / "b.xinfer", "fp16")
    plan = open_bundle(root).manifest.engine_plan
    lines: list[str] = []
    res = build_engine(root / "model.onnx", plan, tmp_path / "out", log=lines.append)
    cc = _cudart.device_properties(_cudart.load(), 0)["compute_capability"]
    key = EngineKey.parse(Path(res["path"]).name)
    assert key is not None and key.target == "sm" + cc.replace(".", "") and key.precision == "fp16"
    assert res["compute_capability"] == cc and Path(res["path"]).stat().st_size > 0
    assert res["timing_cache"] and Path(res["timing_cache"]).stat().st_size > 0
    assert lines[0].startswith(f"TensorRT {res['tensorrt_version']}: building") and "built" in lines[-1]
