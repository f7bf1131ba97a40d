"""ONNX Runtime's CUDA execution provider through xs.load (runs only where a CUDA device and onnxruntime-gpu
are present; skipped with the reason elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest

import xinfer_sdk as xs

pytestmark = pytest.mark.gpu


def _mlp(path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 4)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["output"])], "mm",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return w


def test_cuda_provider_matches_the_reference(tmp_path):
    from xinfer_sdk.doctor import ort_providers

    if "CUDAExecutionProvider" not in ort_providers()["working"]:
        pytest.skip("onnxruntime-gpu with a working CUDAExecutionProvider is not installed")
    w = _mlp(tmp_path / "mm.onnx")
    x = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    with xs.load(tmp_path / "mm.onnx", profile="cpu", device="cuda:0", backend="onnxruntime") as model:
        out = model.infer({"input": x})["output"]
        assert "CUDAExecutionProvider" in model.describe()["workers"][0]["providers"]
    np.testing.assert_allclose(out, x @ w, rtol=1e-3, atol=1e-3)
