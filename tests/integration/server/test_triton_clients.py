"""Triton's own clients (tritonclient.http and tritonclient.grpc), unmodified, against our server."""

from __future__ import annotations

import numpy as np
import pytest

th = pytest.importorskip("tritonclient.http")
tg = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

TYPES_IN = {"h": ("FP16", np.float16), "flag": ("BOOL", np.bool_), "ids": ("INT64", np.int64),
            "text": ("BYTES", object)}


def types_inputs(n=2):
    rng = np.random.default_rng(1)
    return {"h": rng.standard_normal((n, 3)).astype(np.float16), "flag": rng.integers(0, 2, (n, 2)).astype(bool),
            "ids": rng.integers(-5, 5, (n, 2)).astype(np.int64),
            "text": np.array([[f"héllo {i}".encode()] for i in range(n)], dtype=object)}


def check_types(get, data):
    np.testing.assert_array_equal(get("h2"), (data["h"] * np.float16(2)))
    np.testing.assert_array_equal(get("nflag"), ~data["flag"])
    np.testing.assert_array_equal(get("ids1"), data["ids"] + 1)
    # binary BYTES come back as bytes, JSON BYTES as str (as from Triton)
    got = [v[0] if isinstance(v[0], bytes) else v[0].encode() for v in get("text_out")]
    assert got == [v[0] for v in data["text"]]


@pytest.fixture(scope="module")
def http(server):
    return th.InferenceServerClient(f"127.0.0.1:{server.port}")


@pytest.fixture(scope="module")
def grpc(grpc_server):
    """tritonclient.grpc against each gRPC transport (native, grpcio)."""
    return tg.InferenceServerClient(f"127.0.0.1:{grpc_server.grpc_port}")


def test_http_health_and_metadata(http):
    assert http.is_server_live() and http.is_server_ready()
    md = http.get_server_metadata()
    assert md["name"] == "xinfer-sdk" and "binary_tensor_data" in md["extensions"]
    assert http.is_model_ready("mlp") and http.is_model_ready("mlp", "1")
    assert not http.is_model_ready("nope")
    mm = http.get_model_metadata("mlp")
    assert mm["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8]}]
    assert mm["platform"] == "onnxruntime_onnx" and mm["versions"] == ["1"]
    cfg = http.get_model_config("mlp")
    assert cfg["max_batch_size"] == 8 and cfg["input"][0]["dims"] == [8] and cfg["input"][0]["data_type"] == "TYPE_FP32"
    assert {m["name"] for m in http.get_model_repository_index()} == {"mlp", "types"}


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_http_infer_mlp(server, http, binary_in, binary_out):
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    i = th.InferInput("input", [3, 8], "FP32")
    i.set_data_from_numpy(x, binary_data=binary_in)
    r = http.infer("mlp", [i], outputs=[th.InferRequestedOutput("output", binary_data=binary_out)], request_id="r1")
    np.testing.assert_allclose(r.as_numpy("output"), server.mlp_ref(x), rtol=1e-5, atol=1e-5)
    assert r.get_response()["id"] == "r1"


@pytest.mark.parametrize("binary", [True, False])
def test_http_every_datatype(http, binary):
    data = types_inputs()
    ins = []
    for name, (dt, _) in TYPES_IN.items():
        i = th.InferInput(name, list(data[name].shape), dt)
        i.set_data_from_numpy(data[name], binary_data=binary)
        ins.append(i)
    outs = [th.InferRequestedOutput(n, binary_data=binary) for n in ("h2", "nflag", "ids1", "text_out")]
    r = http.infer("types", ins, outputs=outs, model_version="1")
    check_types(r.as_numpy, data)


def test_http_selected_output_and_compression(http):
    data = types_inputs(1)
    ins = []
    for name, (dt, _) in TYPES_IN.items():
        i = th.InferInput(name, list(data[name].shape), dt)
        i.set_data_from_numpy(data[name])
        ins.append(i)
    r = http.infer("types", ins, outputs=[th.InferRequestedOutput("ids1")], request_compression_algorithm="gzip")
    assert [o["name"] for o in r.get_response()["outputs"]] == ["ids1"]
    np.testing.assert_array_equal(r.as_numpy("ids1"), data["ids"] + 1)


def test_http_errors_are_kserve_errors(http):
    i = th.InferInput("input", [1, 7], "FP32")
    i.set_data_from_numpy(np.zeros((1, 7), np.float32))
    with pytest.raises(InferenceServerException, match="dimension 1 must be 8"):
        http.infer("mlp", [i])
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        http.get_model_metadata("nope")
    with pytest.raises(InferenceServerException, match="no version '7'"):
        http.get_model_config("mlp", "7")


def test_http_statistics_extension(http):
    st = http.get_inference_statistics("mlp")["model_stats"][0]
    assert st["name"] == "mlp" and st["inference_stats"]["success"]["count"] >= 1
    assert set(st["inference_stats"]) >= {"success", "fail", "queue", "compute_input", "compute_infer",
                                          "compute_output"}
    assert len(http.get_inference_statistics()["model_stats"]) == 2


def test_grpc_health_metadata_config(grpc):
    assert grpc.is_server_live() and grpc.is_server_ready() and grpc.is_model_ready("mlp")
    try:
        ok = grpc.is_model_ready("mlp", "9")
    except InferenceServerException as exc:  # unknown version: NOT_FOUND
        ok = False
        assert "NOT_FOUND" in str(exc.status())
    assert ok is False
    assert "binary_tensor_data" in grpc.get_server_metadata().extensions
    mm = grpc.get_model_metadata("types")
    assert [(t.name, t.datatype) for t in mm.inputs] == [("h", "FP16"), ("flag", "BOOL"), ("ids", "INT64"),
                                                         ("text", "BYTES")]
    cfg = grpc.get_model_config("mlp").config
    assert cfg.max_batch_size == 8 and list(cfg.input[0].dims) == [8]
    st = grpc.get_inference_statistics("mlp").model_stats[0]
    assert st.name == "mlp"
    assert {m.name for m in grpc.get_model_repository_index().models} == {"mlp", "types"}


def test_grpc_infer_mlp_and_every_datatype(grpc_server, grpc):
    server = grpc_server
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    i = tg.InferInput("input", [4, 8], "FP32")
    i.set_data_from_numpy(x)
    r = grpc.infer("mlp", [i], request_id="g1")
    np.testing.assert_allclose(r.as_numpy("output"), server.mlp_ref(x), rtol=1e-5, atol=1e-5)
    assert r.get_response().id == "g1"
    data = types_inputs(3)
    ins = []
    for name, (dt, _) in TYPES_IN.items():
        i = tg.InferInput(name, list(data[name].shape), dt)
        i.set_data_from_numpy(data[name])
        ins.append(i)
    r = grpc.infer("types", ins)
    check_types(r.as_numpy, data)


def test_grpc_errors_map_to_status_codes(grpc):
    i = tg.InferInput("input", [1, 8], "FP16")
    i.set_data_from_numpy(np.zeros((1, 8), np.float16))
    with pytest.raises(InferenceServerException) as ei:
        grpc.infer("mlp", [i])
    assert "INVALID_ARGUMENT" in str(ei.value.status()) and "expected dtype float32" in ei.value.message()
    with pytest.raises(InferenceServerException) as ei:
        grpc.get_model_metadata("nope")
    assert "NOT_FOUND" in str(ei.value.status())
    with pytest.raises(InferenceServerException) as ei:
        grpc.get_log_settings()  # a Triton RPC this server does not implement
    assert "UNIMPLEMENTED" in str(ei.value.status())


def test_grpc_stream_infer_keeps_order(grpc):
    import queue

    got: queue.Queue = queue.Queue()
    grpc.start_stream(callback=lambda result, error: got.put((result, error)))
    try:
        for k in range(6):
            i = tg.InferInput("input", [1, 8], "FP32")
            i.set_data_from_numpy(np.full((1, 8), k, np.float32))
            grpc.async_stream_infer("mlp", [i], request_id=str(k))
        bad = tg.InferInput("input", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
        grpc.async_stream_infer("mlp", [bad], request_id="bad")
        results = [got.get(timeout=10) for _ in range(7)]
    finally:
        grpc.stop_stream()
    ids = [r.get_response().id for r, e in results[:6]]
    assert ids == [str(k) for k in range(6)]
    assert results[6][0] is None and "dimension 1 must be 8" in str(results[6][1])
