"""KServe v2 tensor codec: binary and JSON tensors, BYTES framing, responses; no server needed."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.errors import InvalidInput
from xinfer_sdk.server import codec

OUT = [TensorSpec("y", "float32", (-1, 2)), TensorSpec("z", "int64", (-1,))]


@pytest.mark.parametrize("dt,np_dt", [("FP32", np.float32), ("FP16", np.float16), ("FP64", np.float64),
                                      ("INT8", np.int8), ("UINT16", np.uint16), ("INT64", np.int64),
                                      ("BOOL", np.bool_)])
def test_binary_and_json_round_trip(dt, np_dt):
    a = (np.arange(6).reshape(2, 3) % 2).astype(np_dt)
    np.testing.assert_array_equal(codec.decode_binary("t", dt, (2, 3), a.tobytes()), a)
    np.testing.assert_array_equal(codec.decode_json_data("t", dt, (2, 3), a.tolist()), a)  # nested
    np.testing.assert_array_equal(codec.decode_json_data("t", dt, (2, 3), a.ravel().tolist()), a)  # flat
    assert codec.decode_json_data("t", dt, (2, 3), a.tolist()).dtype == np.dtype(np_dt)


def test_bytes_elements_round_trip():
    a = np.array([b"ab", "é".encode(), b"\xff\x00"], dtype=object).reshape(3, 1)
    raw = codec.encode_bytes_elements(a)
    assert raw[:4] == struct.pack("<I", 2)
    back = codec.decode_binary("s", "BYTES", (3, 1), raw)
    assert back.ravel().tolist() == ["ab", "é", b"\xff\x00"]  # UTF-8 as str for the engine, else bytes


def test_binary_request_with_header_length_and_binary_output():
    x = np.ones((1, 2), np.float32)
    head = json.dumps({"id": "7", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2],
                                              "parameters": {"binary_data_size": 8}}],
                       "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    req = codec.decode_http_request(head + x.tobytes(), len(head), OUT)
    assert req.id == "7" and req.outputs.names == ["y"] and req.outputs.binary == [True]
    np.testing.assert_array_equal(req.inputs["x"], x)
    body, hlen = codec.encode_http_response("m", "1", req.id, {"y": x * 3, "z": np.arange(1)}, req.outputs)
    doc = json.loads(body[:hlen])
    assert doc == {"id": "7", "model_name": "m", "model_version": "1",
                   "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}]}
    np.testing.assert_array_equal(np.frombuffer(body[hlen:], np.float32), [3, 3])


def test_json_response_lists_every_output_by_default():
    req = codec.decode_http_request(json.dumps({"inputs": [{"name": "x", "datatype": "INT64", "shape": [2],
                                                            "data": [1, 2]}]}).encode(), None, OUT)
    body, hlen = codec.encode_http_response("m", "1", None, {"y": np.zeros((1, 2), np.float32),
                                                            "z": np.array([5])}, req.outputs)
    assert hlen is None
    doc = json.loads(body)
    assert [o["name"] for o in doc["outputs"]] == ["y", "z"] and doc["outputs"][1]["data"] == [5]


@pytest.mark.parametrize("args,fragment", [
    (("FP32", (10**9, 10**9), b""), "needs 4000000000000000000"),
    (("FP32", (2,), b"\x00" * 7), "7 bytes of binary data"),
    (("BYTES", (2,), struct.pack("<I", 1) + b"a"), "1 BYTES elements"),
    (("BYTES", (1,), b"\x01\x00"), "length prefix"),
    (("BYTES", (10**6,), b""), "claims 1000000 BYTES"),
    (("BF16", (1,), b"\x00\x00"), "unknown datatype 'BF16'"),
])
def test_binary_errors_name_the_problem(args, fragment):
    with pytest.raises(InvalidInput, match="input 't'") as ei:
        codec.decode_binary("t", *args)
    assert fragment in str(ei.value)


def test_timeout_parameter_is_microseconds():
    assert codec.timeout_param({"timeout": 250_000}) == 0.25
    assert codec.timeout_param({}) is None
    with pytest.raises(InvalidInput, match="timeout"):
        codec.timeout_param({"timeout": "1s"})
