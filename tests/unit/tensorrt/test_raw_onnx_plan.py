"""A raw .onnx ("as-is") gets a TensorRT plan: the graph's own precision and the requested batch maximum (review D8).

The ONNX files here are protobuf bytes written by hand (the wire format the reader decodes), so no ``onnx``
package is needed; tests/integration/runtime/test_onnx_precision.py checks the reader on graphs made by onnx
and ONNX Runtime's FP16 / Q/DQ converters.
"""

from __future__ import annotations

import struct

import pytest

from xinfer_sdk.bundle import Artifact, Bundle, Manifest, TensorSpec, sha256_file
from xinfer_sdk.policy import BatchPolicy
from xinfer_sdk.profiles import load_profile
from xinfer_sdk.runtime.backends.tensorrt import TensorRTBackend, _plan
from xinfer_sdk.runtime.loader import _size_raw_onnx
from xinfer_sdk.runtime.onnx_precision import graph_precision, precision_of, scan

A10 = load_profile("a10")
FLOAT, INT8, FLOAT16 = 1, 3, 10


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(num << 3) + _varint(payload)
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def tensor(name: str, dtype: int, dims: list[int]) -> bytes:
    size = {FLOAT: 4, FLOAT16: 2, INT8: 1}[dtype]
    n = 1
    for d in dims:
        n *= d
    return b"".join(_field(1, d) for d in dims) + _field(2, dtype) + _field(8, name.encode()) + \
        _field(9, b"\0" * (n * size))


def node(op: str, inputs: list[str], outputs: list[str]) -> bytes:
    return b"".join(_field(1, i.encode()) for i in inputs) + b"".join(_field(2, o.encode()) for o in outputs) + \
        _field(4, op.encode())


def model(nodes: list[bytes], inits: list[bytes]) -> bytes:
    graph = b"".join(_field(1, n) for n in nodes) + _field(2, b"g") + b"".join(_field(5, t) for t in inits)
    return _field(1, 8) + _field(2, b"test") + _field(7, graph) + _field(8, _field(2, 17))


MATMUL = [node("MatMul", ["x", "W"], ["h"]), node("Add", ["h", "b"], ["y"])]


def test_reader_finds_ops_and_weight_types():
    ops, elements = scan(model(MATMUL, [tensor("W", FLOAT16, [16, 8]), tensor("b", FLOAT, [8])]))
    assert ops == {b"MatMul": 1, b"Add": 1} and elements == {FLOAT16: 128, FLOAT: 8}
    assert precision_of(ops, elements) == "fp16"  # the FP16 converter keeps some FP32 (blocked ops, biases)
    assert precision_of(*scan(model(MATMUL, [tensor("W", FLOAT, [16, 8])]))) == "fp32"
    qdq = [node("QuantizeLinear", ["x", "s", "z"], ["q"]), node("DequantizeLinear", ["q", "s", "z"], ["d"])]
    assert precision_of(*scan(model(qdq + MATMUL, [tensor("W", INT8, [16, 8]), tensor("s", FLOAT, [])]))) == "int8"
    assert precision_of(*scan(model([], []))) == "fp32"


def test_unreadable_file_is_fp32(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff garbage" + struct.pack("<d", 1.0))
    assert graph_precision(p) == "fp32"


def raw_bundle(tmp_path, onnx: bytes) -> Bundle:
    """What loader.bundle_from_onnx makes of a batched raw .onnx (x[-1,16] -> y[-1,8])."""
    path = tmp_path / "raw.onnx"
    path.write_bytes(onnx)
    art = Artifact(path=path.name, sha256=sha256_file(path), bytes=path.stat().st_size, role="model")
    mf = Manifest(name="raw", inputs=[TensorSpec("x", "float32", (-1, 16), ("N", None))],
                  outputs=[TensorSpec("y", "float32", (-1, 8), ("N", None))], precision="as-is", max_batch_size=1,
                  profile={}, batch={}, artifacts={art.path: art}, source={"path": str(path), "format": "onnx"})
    return Bundle(root=tmp_path, manifest=mf)


@pytest.mark.parametrize(("weights", "precision"), [(FLOAT, "fp32"), (FLOAT16, "fp16")])
def test_raw_onnx_plan_takes_the_graph_precision_and_the_policy_batch(tmp_path, trt, gpu, weights, precision):
    trt()
    b = raw_bundle(tmp_path, model(MATMUL, [tensor("W", weights, [16, 8]), tensor("b", FLOAT, [8])]))
    _size_raw_onnx(b, BatchPolicy(max_batch_size=16, preferred_batch_sizes=(4, 8)))
    assert TensorRTBackend.unavailable_reason(b, A10, "cuda:0") is None  # was: unknown precision 'as-is'
    plan = _plan(b, A10)
    assert plan["precision"] == precision
    assert plan["batch"] == {"min": 1, "opt": 8, "max": 16}  # was 1..1..1
    assert plan["profiles"][0]["x"] == {"min": [1, 16], "opt": [8, 16], "max": [16, 16]}


def test_raw_qdq_onnx_plans_int8(tmp_path, trt, gpu):
    trt()
    qdq = [node("QuantizeLinear", ["x", "s", "z"], ["q"]), node("DequantizeLinear", ["q", "s", "z"], ["d"])]
    b = raw_bundle(tmp_path, model(qdq + MATMUL, [tensor("W", INT8, [16, 8]), tensor("s", FLOAT, [])]))
    _size_raw_onnx(b, BatchPolicy(max_batch_size=8))
    plan = _plan(b, A10)
    assert plan["precision"] == "int8" and "INT8" in plan["per_major"]["10"]["set_flags"]
