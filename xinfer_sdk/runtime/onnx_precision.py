"""The precision an ONNX graph was made in (fp32 / fp16 / bf16 / int8 / fp8), read without the ``onnx`` package.

A raw ``.onnx`` handed to ``xs.load()`` is "as-is": the TensorRT backend still needs a build precision for its
plan. On TensorRT 10 (weakly typed) it decides the builder flags: a Q/DQ graph needs INT8, an FP16 graph FP16;
on TensorRT 11 (strongly typed) the graph decides anyway and the name only labels the engine.

The runtime path must not need ``onnx`` (DESIGN: numpy + pyyaml + one engine), so this reads the protobuf
wire format directly: ModelProto.graph (field 7) -> GraphProto.node (1, ``op_type`` = field 4) and
GraphProto.initializer (5, TensorProto: ``dims`` = 1, ``data_type`` = 2). Only those fields are decoded; the
weight bytes are skipped, and the file is memory-mapped, so a multi-GB model costs one pass over its headers.
"""

from __future__ import annotations

import functools
import mmap
import os
from collections import Counter

# TensorProto.DataType values (onnx.proto)
_FLOAT, _UINT8, _INT8, _FLOAT16, _BFLOAT16 = 1, 2, 3, 10, 16
_FP8 = (17, 18, 19, 20, 24)
_QDQ = (b"QuantizeLinear", b"DequantizeLinear")


class _Reader:
    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf, pos: int, end: int):
        self.buf, self.pos, self.end = buf, pos, end

    def varint(self) -> int:
        shift = result = 0
        while True:
            if self.pos >= self.end:
                raise ValueError("truncated varint")
            b = self.buf[self.pos]
            self.pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def fields(self):
        """(field number, wire type, value): an int for varint/fixed, a (start, end) span for length-delimited."""
        while self.pos < self.end:
            key = self.varint()
            field, wire = key >> 3, key & 7
            if wire == 0:
                yield field, wire, self.varint()
            elif wire == 2:
                n = self.varint()
                start = self.pos
                self.pos += n
                if self.pos > self.end:
                    raise ValueError("truncated field")
                yield field, wire, (start, self.pos)
            elif wire == 1:
                self.pos += 8
                yield field, wire, None
            elif wire == 5:
                self.pos += 4
                yield field, wire, None
            else:
                raise ValueError(f"unsupported wire type {wire}")


def _tensor(buf, span: tuple[int, int]) -> tuple[int, int]:
    """(data_type, element count) of one TensorProto."""
    dtype, numel = 0, 1
    for field, wire, value in _Reader(buf, *span).fields():
        if field == 2 and wire == 0:
            dtype = value
        elif field == 1 and wire == 0:
            numel *= value
        elif field == 1 and wire == 2:  # packed dims
            r = _Reader(buf, *value)
            while r.pos < r.end:
                numel *= r.varint()
    return dtype, numel


def scan(buf) -> tuple[Counter, Counter]:
    """(op_type counts, initializer elements per data_type) of the top-level graph of a serialized ModelProto."""
    ops: Counter = Counter()
    elements: Counter = Counter()
    for field, wire, value in _Reader(buf, 0, len(buf)).fields():
        if field != 7 or wire != 2:
            continue
        for gfield, gwire, gvalue in _Reader(buf, *value).fields():
            if gwire != 2:
                continue
            if gfield == 1:
                for nfield, nwire, nvalue in _Reader(buf, *gvalue).fields():
                    if nfield == 4 and nwire == 2:
                        ops[bytes(buf[nvalue[0]:nvalue[1]])] += 1
            elif gfield == 5:
                dtype, numel = _tensor(buf, gvalue)
                elements[dtype] += numel
    return ops, elements


def precision_of(ops: Counter, elements: Counter) -> str:
    """int8 / fp8 for a Q/DQ graph, else the float type holding most weight elements (fp32 when none)."""
    if any(ops.get(q) for q in _QDQ):
        fp8 = sum(elements.get(t, 0) for t in _FP8)
        int8 = elements.get(_INT8, 0) + elements.get(_UINT8, 0)
        return "fp8" if fp8 > int8 else "int8"
    floats = {"fp32": elements.get(_FLOAT, 0), "fp16": elements.get(_FLOAT16, 0),
              "bf16": elements.get(_BFLOAT16, 0)}
    best = max(floats, key=lambda k: floats[k])
    return best if floats[best] > 0 else "fp32"


@functools.lru_cache(maxsize=32)
def _cached(path: str, size: int, mtime: float) -> str:
    with open(path, "rb") as f:
        if size == 0:
            return "fp32"
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            ops, elements = scan(buf)
    return precision_of(ops, elements)


def graph_precision(path: str | os.PathLike[str]) -> str:
    """The precision of the ONNX file at ``path``; 'fp32' when it cannot be read as a ModelProto."""
    p = os.fspath(path)
    st = os.stat(p)
    try:
        return _cached(p, st.st_size, st.st_mtime)
    except (ValueError, IndexError, OSError):
        return "fp32"
