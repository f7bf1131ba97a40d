"""xs.load + infer / submit / infer_async on a real ONNX Runtime session."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import xinfer_sdk as xs
from xinfer_sdk.errors import BundleError, InvalidInput, ServerClosing


def test_infer_submit_async_agree_with_the_reference(mlp_onnx):
    path, ref = mlp_onnx
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    with xs.load(path, profile="cpu", batching=xs.BatchPolicy(max_batch_size=4, max_batch_delay="1ms")) as model:
        np.testing.assert_allclose(model.infer({"input": x})["output"], ref(x), rtol=1e-5, atol=1e-5)
        futs = [model.submit({"input": x[i:i + 1]}) for i in range(5)]
        got = np.concatenate([f.result(timeout=10)["output"] for f in futs])
        np.testing.assert_allclose(got, ref(x), rtol=1e-5, atol=1e-5)

        async def many():
            return await asyncio.gather(*[model.infer_async({"input": x[i:i + 1]}) for i in range(5)])

        got = np.concatenate([r["output"] for r in asyncio.run(many())])
        np.testing.assert_allclose(got, ref(x), rtol=1e-5, atol=1e-5)
        d = model.describe()
        assert d["backend"] == "onnxruntime" and "CPUExecutionProvider" in d["workers"][0]["providers"]
        assert "profile 'cpu'" in d["why"]
        assert model.stats()["requests"]["success"] >= 11


def test_invalid_input_is_refused_before_the_queue(mlp_onnx):
    path, _ = mlp_onnx
    with xs.load(path, profile="cpu") as model:
        with pytest.raises(InvalidInput, match="input 'input': dimension 1 must be 8"):
            model.infer({"input": np.zeros((1, 9), np.float32)})
        assert model.stats()["batches"] == 0


def test_closed_model_refuses(mlp_onnx):
    path, _ = mlp_onnx
    model = xs.load(path, profile="cpu")
    model.close()
    with pytest.raises(ServerClosing):
        model.infer({"input": np.zeros((1, 8), np.float32)})


def test_config_yaml_with_the_seed_keys(mlp_onnx, tmp_path):
    path, _ = mlp_onnx
    cfg = tmp_path / "config.yaml"
    cfg.write_text("batch_size: 64\nmax_batch_delay: 10ms\ndevice_concurrency: 2\n")
    with xs.load(path, profile="cpu", config=cfg) as model:
        assert model.policy.max_batch_size == 64 and model.policy.max_batch_delay == pytest.approx(0.01)
        assert model.policy.device_concurrency == 2 and len(model.describe()["workers"]) == 2
    with xs.load(path, profile="cpu", batching=str(cfg)) as model:
        assert model.policy.max_batch_size == 64


def test_gpu_profile_without_a_gpu_falls_back_to_cpu_and_says_so(mlp_onnx):
    path, _ = mlp_onnx
    with xs.load(path, profile="t4") as model:
        d = model.describe()
        assert d["device"] == "cpu" and d["backend"] == "onnxruntime"
        assert "no GPU backend works here" in d["notes"][0]
        assert "tensorrt" in d["skipped"]


def test_explicit_missing_backend_names_the_extra(mlp_onnx):
    path, _ = mlp_onnx
    with pytest.raises(xs.BackendUnavailable, match="tensorrt"):
        xs.load(path, profile="cpu", backend="tensorrt")


def test_not_a_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(BundleError, match="no bundle at"):
        xs.load(tmp_path / "missing.xinfer", profile="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="is not a bundle"):
        xs.load(tmp_path / "empty", profile="cpu")


def test_seed_inference_server_api(mlp_onnx):
    path, ref = mlp_onnx
    x = np.ones((3, 8), np.float32)
    with xs.InferenceServer(model_path=str(path), device="cpu", batch_size=32, max_workers=2) as server:
        assert server.policy.max_batch_size == 32 and server.policy.device_concurrency == 2
        np.testing.assert_allclose(server.infer({"input": x})["output"], ref(x), rtol=1e-5, atol=1e-5)
        assert server.model.describe()["device"] == "cpu"


def test_string_inputs_reach_onnx_runtime_as_text(tmp_path):
    """BYTES tensors: ONNX Runtime's binding would turn bytes into their repr; the backend passes text."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["text"], ["echo"])], "echo",
                              [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch", 2])],
                              [helper.make_tensor_value_info("echo", TensorProto.STRING, ["batch", 2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(tmp_path / "echo.onnx"))
    with xs.load(tmp_path / "echo.onnx", profile="cpu") as model:
        out = model.infer({"text": np.array([[b"hello", "w\u00f6rld".encode()]], dtype=object)})["echo"]
    assert out.tolist() == [["hello", "w\u00f6rld"]]
