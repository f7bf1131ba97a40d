"""Models, bundles and tolerances for the GPU suite (imported by the tests; fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xinfer_sdk.accel.nvidia.engine_plan import make_build_plan
from xinfer_sdk.bundle import Manifest, TensorSpec, register, save_manifest
from xinfer_sdk.profiles import load_profile

PROFILE_NAME = "a10"  # the plan's target profile only sets policy; the engine is built for the GPU at hand
WIDTH, HIDDEN, OUT = 256, 1024, 64  # big enough that TensorRT 10 picks FP16 tensor-core kernels under the flag


def compute_capability(index: int = 0) -> tuple[int, int]:
    from xinfer_sdk.accel.nvidia import _cudart

    major, minor = _cudart.device_properties(_cudart.load(), index)["compute_capability"].split(".")
    return int(major), int(minor)


def device_count() -> int:
    from xinfer_sdk.accel.nvidia import _cudart

    return _cudart.device_count(_cudart.load())


def trt_major() -> int:
    import tensorrt as trt

    return int(trt.__version__.split(".")[0])


def mlp_onnx(path: Path, *, batch: int | str = "batch", width: int = WIDTH, hidden: int = HIDDEN,
             out: int = OUT) -> Path:
    """x[batch, width] -> relu(x @ W1 + b1) @ W2 -> y[batch, out]; seeded; a fixed batch when ``batch`` is an int."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((width, hidden)) / np.sqrt(width)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32) * 0.1, "b1")
    w2 = numpy_helper.from_array((rng.standard_normal((hidden, out)) / np.sqrt(hidden)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, out])],
                              initializer=[w1, b1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)  # types too
    onnx.save(model, str(path))
    return path


def convert_graph(src: Path, dst: Path, precision: str) -> str:
    """The deployable graph for ``precision`` as the build's steps make it; returns the graph's type."""
    import onnx
    from xinfer_sdk.converters import bf16, fp16

    model = onnx.load(str(src))
    if precision == "fp16":
        onnx.save(fp16.convert(model)[0], str(dst))
    elif precision == "bf16":
        onnx.save(bf16.convert(model)[0], str(dst))
    else:
        onnx.save(model, str(dst))
        return "fp32"
    return precision


def make_bundle(root: Path, precision: str, *, max_batch_size: int = 32, static_batch: int | None = None) -> Path:
    """A bundle whose model.onnx is converted for ``precision`` (fp32 / fp16 / bf16) and whose plan records it;
    reference.onnx is the FP32 graph. ``static_batch``: a fixed-shape model (no dynamic axis, empty profile)."""
    root.mkdir(parents=True)
    batch: int | str = static_batch if static_batch else "batch"
    mlp_onnx(root / "reference.onnx", batch=batch)
    graph = convert_graph(root / "reference.onnx", root / "model.onnx", precision)
    dim = static_batch if static_batch else -1
    inputs = [TensorSpec("x", "float32", (dim, WIDTH), ("batch", None))]
    outputs = [TensorSpec("y", "float32", (dim, OUT), ("batch", None))]
    prof = load_profile(PROFILE_NAME)
    mbs = 0 if static_batch else max_batch_size
    plan = make_build_plan(profile=prof, precision=precision, inputs=inputs, max_batch_size=mbs, graph=graph)
    mf = Manifest(name="mlp", inputs=inputs, outputs=outputs, precision=precision, max_batch_size=mbs,
                  profile={"name": prof.name}, batch=prof.batch.to_dict(), engine_plan=plan)
    register(root, mf, "model.onnx", role="model")
    register(root, mf, "reference.onnx", role="reference")
    save_manifest(root, mf)
    return root


def ort_reference(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]


def tolerance(precision: str) -> float:
    """Relative to the output's scale: FP32 (TF32 off) tight, FP16/BF16 by their mantissas, INT8 loose."""
    return {"fp32": 1e-4, "tf32": 5e-3, "fp16": 2e-2, "bf16": 6e-2, "int8": 0.15, "fp8": 0.2}[precision]
