"""A corpus of bad requests: each gets a 4xx KServe error JSON naming the problem, and the server keeps serving.
Plus a hypothesis fuzz run over request bodies and headers (never a 5xx, never a dead server)."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

GOOD = np.arange(8, dtype=np.float32).reshape(1, 8)


def jdoc(inputs=None, **extra):
    doc = {"inputs": inputs if inputs is not None else [
        {"name": "input", "datatype": "FP32", "shape": [1, 8], "data": GOOD.ravel().tolist()}]}
    doc.update(extra)
    return json.dumps(doc).encode()


def binary(header: dict, payload: bytes, hlen: int | None = None):
    head = json.dumps(header).encode()
    return head + payload, {"Inference-Header-Content-Length": str(len(head) if hlen is None else hlen)}


def bin_input(shape=(1, 8), size=32, dt="FP32", name="input"):
    return {"name": name, "datatype": dt, "shape": list(shape), "parameters": {"binary_data_size": size}}


def send(port, method="POST", path="/v2/models/mlp/infer", body=b"", headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def raw(port, data: bytes):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(data)
    r = http.client.HTTPResponse(s)
    r.begin()
    body = r.read()
    s.close()
    return r.status, body


def types_doc(**over):
    ins = {"h": {"name": "h", "datatype": "FP16", "shape": [1, 3], "data": [1, 2, 3]},
           "flag": {"name": "flag", "datatype": "BOOL", "shape": [1, 2], "data": [True, False]},
           "ids": {"name": "ids", "datatype": "INT64", "shape": [1, 2], "data": [1, 2]},
           "text": {"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": ["a"]}}
    ins.update(over)
    return json.dumps({"inputs": list(ins.values())}).encode()



# (id, request kwargs for send(), expected status, a piece of the error message)
CORPUS = [
    ("malformed json", dict(body=b'{"inputs": ['), 400, "not valid JSON"),
    ("top-level array", dict(body=b"[1, 2]"), 400, "JSON object"),
    ("empty body", dict(body=b""), 400, "empty request body"),
    ("invalid utf-8", dict(body=b'{"inputs": "\xff\xfe"}'), 400, "not valid JSON"),
    ("no inputs", dict(body=b"{}"), 400, "non-empty 'inputs'"),
    ("empty inputs", dict(body=jdoc([])), 400, "non-empty 'inputs'"),
    ("inputs not a list", dict(body=b'{"inputs": 3}'), 400, "non-empty 'inputs'"),
    ("input not an object", dict(body=jdoc([3])), 400, "inputs[0] must be a JSON object"),
    ("name missing", dict(body=jdoc([{"datatype": "FP32", "shape": [1, 8], "data": [0] * 8}])), 400, "'name'"),
    ("name not a string", dict(body=jdoc([{"name": 5, "datatype": "FP32", "shape": [1, 8], "data": [0] * 8}])),
     400, "'name' must be a string"),
    ("unknown input name", dict(body=jdoc([{"name": "inp", "datatype": "FP32", "shape": [1, 8], "data": [0] * 8}])),
     400, "unknown input(s) 'inp'"),
    ("duplicate input", dict(body=jdoc([{"name": "input", "datatype": "FP32", "shape": [1, 8], "data": [0] * 8}] * 2)),
     400, "given twice"),
    ("wrong datatype", dict(body=jdoc([{"name": "input", "datatype": "FP64", "shape": [1, 8], "data": [0.5] * 8}])),
     400, "expected dtype float32, got float64"),
    ("unknown datatype", dict(body=jdoc([{"name": "input", "datatype": "FLOAT", "shape": [1, 8], "data": [0] * 8}])),
     400, "unknown datatype 'FLOAT'"),
    ("datatype missing", dict(body=jdoc([{"name": "input", "shape": [1, 8], "data": [0] * 8}])), 400,
     "unknown datatype None"),
    ("shape not a list", dict(body=jdoc([{"name": "input", "datatype": "FP32", "shape": "1,8", "data": [0] * 8}])),
     400, "'shape' must be a list"),
    ("negative dimension", dict(body=jdoc([{"name": "input", "datatype": "FP32", "shape": [-1, 8], "data": [0] * 8}])),
     400, "non-negative integers"),
    ("float dimension", dict(body=jdoc([{"name": "input", "datatype": "FP32", "shape": [1.5, 8], "data": [0] * 8}])),
     400, "non-negative integers"),
    ("wrong shape", dict(body=jdoc([{"name": "input", "datatype": "FP32", "shape": [1, 7], "data": [0] * 7}])), 400,
     "dimension 1 must be 8"),
    ("wrong rank", dict(body=jdoc([{"name": "input", "datatype": "FP32", "shape": [8], "data": [0] * 8}])), 400,
     "expected 2 dimensions"),
    ("empty tensor", dict(body=jdoc([{"name": "input", "datatype": "FP32", "shape": [0, 8], "data": []}])), 400,
     "is 0 (empty tensor)"),
    ("too many dimensions", dict(body=jdoc([{"name": "input", "datatype": "FP32", "shape": [1] * 40, "data": [0]}])),
     400, "at most 32"),
    ("huge dimension claim (json)",
     dict(body=jdoc([{"name": "input", "datatype": "FP32", "shape": [1, 10**12], "data": [0] * 8}])), 400,
     "needs 1000000000000"),
    ("overflowing shape with a zero dim", dict(zip(("body", "headers"), binary(
        {"inputs": [bin_input(shape=(0, 12005, 12005, 15999463012), size=0)]}, b""))), 400,
     "impossibly large tensor"),
    ("huge dimension claim (binary)", dict(zip(("body", "headers"), binary(
        {"inputs": [bin_input(shape=(10**8, 8), size=32)]}, GOOD.tobytes()))), 400, "needs 3200000000"),
    ("data count mismatch", dict(body=jdoc([{"name": "input", "datatype": "FP32", "shape": [1, 8], "data": [0] * 7}])),
     400, "7 values in 'data'"),
    ("strings for FP32", dict(body=jdoc([{"name": "input", "datatype": "FP32", "shape": [1, 8], "data": ["a"] * 8}])),
     400, "must hold numbers"),
    ("ragged nested data", dict(body=jdoc([{"name": "input", "datatype": "FP32", "shape": [2, 2],
                                            "data": [[1, 2], [3]]}])), 400, "ragged"),
    ("no data, no binary", dict(body=jdoc([{"name": "input", "datatype": "FP32", "shape": [1, 8]}])), 400,
     "neither 'data' nor"),
    ("binary size negative", dict(zip(("body", "headers"), binary({"inputs": [bin_input(size=-4)]}, b""))), 400,
     "binary_data_size must be a non-negative integer"),
    ("binary size not an int", dict(zip(("body", "headers"), binary({"inputs": [bin_input(size="32")]},
                                                                    GOOD.tobytes()))), 400, "binary_data_size must"),
    ("truncated binary body", dict(zip(("body", "headers"), binary({"inputs": [bin_input()]}, GOOD.tobytes()[:16]))),
     400, "goes past the end of the binary data"),
    ("header length beyond the body", dict(zip(("body", "headers"), binary({"inputs": [bin_input()]}, GOOD.tobytes(),
                                                                           hlen=100000))), 400,
     "Inference-Header-Content-Length is 100000"),
    ("header length not a number", dict(body=jdoc(), headers={"Inference-Header-Content-Length": "abc"}), 400,
     "Inference-Header-Content-Length must be"),
    ("header length cuts the JSON", dict(zip(("body", "headers"), binary({"inputs": [bin_input()]}, GOOD.tobytes(),
                                                                         hlen=20))), 400, "not valid JSON"),
    ("unclaimed binary bytes", dict(zip(("body", "headers"), binary({"inputs": [bin_input()]},
                                                                    GOOD.tobytes() + b"xxxx"))), 400, "not claimed"),
    ("binary size vs shape", dict(zip(("body", "headers"), binary({"inputs": [bin_input(size=16)]},
                                                                  GOOD.tobytes()[:16]))), 400, "needs 32"),
    ("unknown model", dict(path="/v2/models/nope/infer", body=jdoc()), 404, "unknown model 'nope'"),
    ("unknown version", dict(path="/v2/models/mlp/versions/3/infer", body=jdoc()), 404, "no version '3'"),
    ("unknown endpoint", dict(method="GET", path="/v2/models/mlp/foo"), 404, "no such endpoint"),
    ("unknown top-level path", dict(method="GET", path="/admin"), 404, "no such endpoint"),
    ("wrong method", dict(method="GET", path="/v2/models/mlp/infer"), 405, "use POST"),
    ("unknown output", dict(body=jdoc(outputs=[{"name": "logits"}])), 400, "unknown output 'logits'"),
    ("outputs not a list", dict(body=jdoc(outputs={"name": "output"})), 400, "'outputs' must be a list"),
    ("classification output", dict(body=jdoc(outputs=[{"name": "output", "parameters": {"classification": 3}}])),
     400, "classification extension"),
    ("binary_data_output not bool", dict(body=jdoc(parameters={"binary_data_output": "yes"})), 400,
     "must be true or false"),
    ("parameters not an object", dict(body=jdoc(parameters=[1])), 400, "'parameters' must be a JSON object"),
    ("negative timeout", dict(body=jdoc(parameters={"timeout": -5})), 400, "'timeout'"),
    ("id not a string", dict(body=jdoc(id=7)), 400, "'id' must be a string"),
    ("oversize body", dict(body=b"x" * (2 << 20)), 413, "larger than the server's limit"),
    ("unsupported content-encoding", dict(body=jdoc(), headers={"Content-Encoding": "br"}), 415,
     "unsupported Content-Encoding 'br'"),
    ("corrupt gzip", dict(body=b"not gzip at all", headers={"Content-Encoding": "gzip"}), 400,
     "cannot be decompressed"),
    ("gzip bomb", dict(body=gzip.compress(b"0" * (3 << 20)), headers={"Content-Encoding": "gzip"}), 400,
     "decompressed body is larger"),
    ("BOOL binary not 0/1", dict(path="/v2/models/types/infer", **dict(zip(("body", "headers"), binary(
        {"inputs": [bin_input((1, 2), 2, "BOOL", "flag")]}, b"\x02\x01")))), 400, "only bytes 0 and 1"),
    ("float for INT64", dict(path="/v2/models/types/infer",
                             body=types_doc(ids={"name": "ids", "datatype": "INT64", "shape": [1, 2],
                                                 "data": [1.5, 2]})), 400, "must hold integers"),
    ("INT64 out of range", dict(path="/v2/models/types/infer",
                                body=types_doc(ids={"name": "ids", "datatype": "INT64", "shape": [1, 2],
                                                    "data": [2**70, 1]})), 400, "outside the INT64 range"),
    ("numbers for BYTES", dict(path="/v2/models/types/infer",
                               body=types_doc(text={"name": "text", "datatype": "BYTES", "shape": [1, 1],
                                                    "data": [5]})), 400, "BYTES 'data' must hold strings"),
    ("inputs disagree on batch", dict(path="/v2/models/types/infer",
                                      body=types_doc(ids={"name": "ids", "datatype": "INT64", "shape": [2, 2],
                                                          "data": [1, 2, 3, 4]})), 400, "differs from the other"),
    ("BYTES length prefix beyond data", dict(path="/v2/models/types/infer", **dict(zip(("body", "headers"), binary(
        {"inputs": [bin_input((1, 1), 7, "BYTES", "text")]}, struct.pack("<I", 100) + b"abc")))), 400,
     "claims 100 bytes"),
]


def test_corpus_is_big_enough():
    assert len(CORPUS) >= 40 and len({c[0] for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_request_gets_a_named_4xx_and_the_server_keeps_serving(server, case):
    _, kwargs, status, fragment = case
    got, body = send(server.port, **kwargs)
    assert got == status, body
    err = json.loads(body)["error"]
    assert fragment in err
    assert "Traceback" not in err
    ok, body = send(server.port, body=jdoc())
    assert ok == 200, body


def test_malformed_http_is_400_and_the_server_keeps_serving(server):
    status, body = raw(server.port, b"BLAH /v2 HTTP/1.1\r\n\r\n")
    assert status == 400 and "malformed HTTP request" in json.loads(body)["error"]
    status, body = raw(server.port, b"GET /v2/health/live HTTP/1.1\r\nContent-Length: zz\r\n\r\n")
    assert status == 400
    assert send(server.port, body=jdoc())[0] == 200


def test_expect_100_continue(server):
    body = jdoc()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body))
    assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")
    s.sendall(body)
    r = http.client.HTTPResponse(s)
    r.begin()
    assert r.status == 200 and json.loads(r.read())["outputs"][0]["shape"] == [1, 4]
    s.close()


# ---------------------------------------------------------------------------------------------------------
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) |
                           st.text(max_size=8), lambda inner: st.lists(inner, max_size=6) |
                           st.dictionaries(st.sampled_from(["name", "datatype", "shape", "data", "parameters",
                                                            "binary_data_size", "inputs", "outputs", "id"]),
                                           inner, max_size=5), max_leaves=30)
datatypes = st.sampled_from(["FP32", "FP16", "FP64", "INT64", "INT8", "UINT8", "BOOL", "BYTES", "BF16", "X"])
shapes = st.lists(st.integers(-2, 2**40), max_size=5)


@st.composite
def requests(draw):
    kind = draw(st.integers(0, 2))
    if kind == 0:  # arbitrary JSON
        return json.dumps(draw(json_values)).encode(), {}
    inp = {"name": draw(st.sampled_from(["input", "x", ""])), "datatype": draw(datatypes), "shape": draw(shapes)}
    if kind == 1:
        inp["data"] = draw(json_values)
        return json.dumps({"inputs": [inp]}).encode(), {}
    payload = draw(st.binary(max_size=64))
    inp["parameters"] = {"binary_data_size": draw(st.integers(-1, 80))}
    head = json.dumps({"inputs": [inp]}).encode()
    hlen = draw(st.one_of(st.just(len(head)), st.integers(-3, len(head) + 100)))
    return head + payload, {"Inference-Header-Content-Length": str(hlen)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(req=requests())
def test_fuzzed_requests_never_get_a_5xx(server, req):
    body, headers = req
    status, data = send(server.port, body=body, headers=headers)
    assert status == 200 or 400 <= status < 500, data
    if status != 200:
        assert json.loads(data)["error"]


def test_server_alive_after_fuzzing(server):
    assert send(server.port, "GET", "/v2/health/live")[0] == 200
    assert send(server.port, body=jdoc())[0] == 200
