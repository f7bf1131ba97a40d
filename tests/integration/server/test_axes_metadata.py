"""Model metadata and Triton model config of models whose tensors batch on other axes, read with tritonclient over
HTTP from a real server: a model batched on axis 0 everywhere keeps Triton's form (max_batch_size > 0, dims without
the batch dim); one with a state batched on axis 1 and a scalar shared by the batch is reported as Triton reports a
model it does not batch itself (max_batch_size 0, every dim, -1 at the batch axis); a stateful model hides its state."""

from __future__ import annotations

import numpy as np
import pytest

th = pytest.importorskip("tritonclient.http")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402
from onnx_models import make_mlp_onnx  # noqa: E402

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def vad_like(path):
    """x [?, 3], state [2, ?, 4], sr [] -> y = x * sr, stateN = state + 1 (silero-vad's layout, unnamed dims)."""
    n = helper.make_node
    g = helper.make_graph(
        [n("Cast", ["sr"], ["srf"], to=F), n("Mul", ["x", "srf"], ["y"]), n("Add", ["state", "one"], ["stateN"])],
        "vad", [helper.make_tensor_value_info("x", F, [None, 3]),
                helper.make_tensor_value_info("state", F, [2, None, 4]),
                helper.make_tensor_value_info("sr", I64, [])],
        [helper.make_tensor_value_info("y", F, [None, 3]), helper.make_tensor_value_info("stateN", F, [2, None, 4])],
        [helper.make_tensor("one", F, [], [1.0])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    import xinfer_sdk as xs
    from xinfer_sdk.server.runner import Server

    d = tmp_path_factory.mktemp("axes-models")
    make_mlp_onnx(d / "mlp.onnx")
    vad_like(d / "vad.onnx")
    pol = {"max_batch_size": 8, "max_batch_delay": "0ms"}
    models = [xs.load(d / "mlp.onnx", profile="cpu", name="mlp", threads=1, batching=pol),
              xs.load(d / "vad.onnx", profile="cpu", name="axes", threads=1, batching=pol, sequence=False),
              xs.load(d / "vad.onnx", profile="cpu", name="stream", threads=1, batching=pol)]
    srv = Server(models, port=0, grpc_port=None, gpu_metrics=False, drain_timeout=5)
    srv.start_background()
    yield th.InferenceServerClient(f"127.0.0.1:{srv.port}")
    srv.stop()


def test_a_model_batched_on_axis_0_keeps_tritons_batched_form(client):
    cfg = client.get_model_config("mlp")
    assert cfg["max_batch_size"] == 8 and cfg["input"][0]["dims"] == [8] and "dynamic_batching" in cfg
    assert client.get_model_metadata("mlp")["inputs"][0]["shape"] == [-1, 8]


def test_a_state_on_axis_1_and_a_scalar_give_max_batch_size_0_and_every_dim(client):
    cfg = client.get_model_config("axes")
    assert cfg["max_batch_size"] == 0 and "dynamic_batching" not in cfg
    assert {t["name"]: t["dims"] for t in cfg["input"]} == {"x": [-1, 3], "state": [2, -1, 4], "sr": []}
    assert {t["name"]: t["dims"] for t in cfg["output"]} == {"y": [-1, 3], "stateN": [2, -1, 4]}
    assert cfg["parameters"]["batch_axes"]["string_value"] == "x:0,state:1,sr:none,y:0,stateN:1"


def test_metadata_gives_each_tensor_its_full_shape_with_the_batch_at_its_own_axis(client):
    md = client.get_model_metadata("axes")
    assert {t["name"]: t["shape"] for t in md["inputs"]} == {"x": [-1, 3], "state": [2, -1, 4], "sr": []}
    assert {t["name"]: t["shape"] for t in md["outputs"]} == {"y": [-1, 3], "stateN": [2, -1, 4]}


def test_a_stateful_model_hides_its_state_in_metadata_and_config(client):
    md = client.get_model_metadata("stream")
    assert [t["name"] for t in md["inputs"]] == ["x", "sr"] and [t["name"] for t in md["outputs"]] == ["y"]
    cfg = client.get_model_config("stream")
    assert [t["name"] for t in cfg["input"]] == ["x", "sr"] and cfg["max_batch_size"] == 0  # sr: shared, no batch


def test_the_axes_model_still_batches_and_answers_over_http(client):
    x = np.ones((2, 3), np.float32)
    state = np.zeros((2, 2, 4), np.float32)
    inp = [th.InferInput("x", [2, 3], "FP32"), th.InferInput("state", [2, 2, 4], "FP32"), th.InferInput("sr", [], "INT64")]
    inp[0].set_data_from_numpy(x)
    inp[1].set_data_from_numpy(state)
    inp[2].set_data_from_numpy(np.array(5, np.int64))
    res = client.infer("axes", inp)
    np.testing.assert_allclose(res.as_numpy("y"), x * 5)
    np.testing.assert_array_equal(res.as_numpy("stateN"), state + 1)
