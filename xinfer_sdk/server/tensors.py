"""KServe v2 tensors <-> numpy: datatypes, client-sent shapes, raw little-endian bytes (Triton's binary tensor
extension, gRPC raw contents, shared memory), length-prefixed BYTES, and JSON ``data``.

Every malformed tensor raises ``InvalidInput`` naming the input and the problem; nothing here trusts a size or a
shape from the client before comparing it with the bytes that actually arrived (a shape claiming 10^12 elements is
refused before anything is allocated). Requests and responses (HTTP JSON, binary extension) are in ``codec.py``.
"""


from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from ..errors import InvalidInput

# KServe datatype -> little-endian numpy dtype (None = BYTES)
DTYPES: dict[str, np.dtype | None] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": None,
}
# numpy dtype -> KServe datatype (for outputs)
_KSERVE = {np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "UINT8", np.dtype(np.uint16): "UINT16",
           np.dtype(np.uint32): "UINT32", np.dtype(np.uint64): "UINT64", np.dtype(np.int8): "INT8",
           np.dtype(np.int16): "INT16", np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64",
           np.dtype(np.float16): "FP16", np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
           np.dtype(object): "BYTES"}
MAX_DIMS = 32
# numpy refuses shapes whose element count (ignoring zeros) overflows; no real tensor comes near this
MAX_DIM_PRODUCT = 1 << 40
_LEN = struct.Struct("<I")
# which numpy kinds of JSON-decoded values each datatype accepts
_JSON_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}


def kserve_datatype(dtype: np.dtype) -> str:
    try:
        return _KSERVE[dtype]
    except KeyError:
        if dtype.kind in "SU":
            return "BYTES"
        raise InvalidInput(f"the model produced dtype {dtype}, which KServe v2 cannot carry") from None


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    """A client-sent shape: a list of non-negative ints (refused otherwise), returned as a tuple."""
    if not isinstance(shape, (list, tuple)):
        raise InvalidInput(f"input {name!r}: 'shape' must be a list of integers, got {type(shape).__name__}")
    if len(shape) > MAX_DIMS:
        raise InvalidInput(f"input {name!r}: shape has {len(shape)} dimensions (at most {MAX_DIMS})")
    product = 1
    for d in shape:
        if type(d) is not int or d < 0:
            raise InvalidInput(f"input {name!r}: shape {list(shape)!r} must hold non-negative integers")
        product *= max(d, 1)
    if product > MAX_DIM_PRODUCT:
        raise InvalidInput(f"input {name!r}: shape {list(shape)!r} claims an impossibly large tensor")
    return tuple(shape)


def dtype_of(name: str, datatype: Any) -> np.dtype | None:
    try:
        return DTYPES[datatype]
    except (KeyError, TypeError):
        known = ", ".join(DTYPES)
        raise InvalidInput(f"input {name!r}: unknown datatype {datatype!r} (KServe v2 datatypes: {known})") from None


def decode_binary(name: str, datatype: str, shape: tuple[int, ...], buf: bytes | memoryview) -> np.ndarray:
    """Raw little-endian tensor bytes (or length-prefixed BYTES elements) -> array of ``shape``."""
    dtype = dtype_of(name, datatype)
    count = math.prod(shape)
    if dtype is None:
        return _decode_bytes_elements(name, shape, count, buf)
    need = count * dtype.itemsize
    if need != len(buf):
        raise InvalidInput(f"input {name!r}: {len(buf)} bytes of binary data, but shape {list(shape)} of "
                           f"{datatype} needs {need}")
    arr = np.frombuffer(buf, dtype=dtype)
    if dtype.kind == "b" and count and arr.view(np.uint8).max() > 1:
        raise InvalidInput(f"input {name!r}: BOOL binary data must hold only bytes 0 and 1")
    return arr.reshape(shape)


def _decode_bytes_elements(name: str, shape: tuple[int, ...], count: int, buf: bytes | memoryview) -> np.ndarray:
    mv = memoryview(buf)
    total = len(mv)
    if count > total // 4 + 1:
        raise InvalidInput(f"input {name!r}: shape {list(shape)} claims {count} BYTES elements but only {total} "
                           "bytes arrived")
    items: list[bytes] = []
    pos = 0
    while pos < total:
        if pos + 4 > total:
            raise InvalidInput(f"input {name!r}: BYTES data ends inside an element's 4-byte length prefix")
        (n,) = _LEN.unpack_from(mv, pos)
        pos += 4
        if pos + n > total:
            raise InvalidInput(f"input {name!r}: a BYTES element claims {n} bytes but only {total - pos} remain")
        items.append(_text(bytes(mv[pos:pos + n])))
        pos += n
    if len(items) != count:
        raise InvalidInput(f"input {name!r}: {len(items)} BYTES elements, but shape {list(shape)} needs {count}")
    arr = np.empty(count, dtype=object)
    arr[:] = items
    return arr.reshape(shape)


def decode_json_data(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    """JSON ``data`` (flat or nested row-major list) -> array of ``shape``; types checked, no silent casts."""
    dtype = dtype_of(name, datatype)
    count = math.prod(shape)
    if not isinstance(data, list):
        data = [data]
    if dtype is None:
        flat = _flatten(name, data)
        if len(flat) != count:
            raise InvalidInput(f"input {name!r}: {len(flat)} values in 'data', but shape {list(shape)} needs {count}")
        arr = np.empty(count, dtype=object)
        arr[:] = [v if isinstance(v, str) else _bytes_item(name, v) for v in flat]
        return arr.reshape(shape)
    try:
        raw = np.array(data)
    except (ValueError, TypeError):
        raise InvalidInput(f"input {name!r}: 'data' is a ragged or mixed nested list") from None
    if raw.size != count:
        raise InvalidInput(f"input {name!r}: {raw.size} values in 'data', but shape {list(shape)} needs {count}")
    if raw.dtype.kind == "O" and dtype.kind in "iu" and all(type(v) is int for v in raw.reshape(-1)):
        info = np.iinfo(dtype)
        raise InvalidInput(f"input {name!r}: a value in 'data' is outside the {datatype} range "
                           f"[{info.min}, {info.max}]")
    if raw.size and raw.dtype.kind not in _JSON_KINDS[dtype.kind]:
        what = {"b": "true/false", "i": "integers", "u": "integers", "f": "numbers"}[dtype.kind]
        raise InvalidInput(f"input {name!r}: {datatype} 'data' must hold {what}, got {_kind_name(raw.dtype)}")
    if dtype.kind in "iu" and raw.size:
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise InvalidInput(f"input {name!r}: a value in 'data' is outside the {datatype} range "
                               f"[{info.min}, {info.max}]")
    with np.errstate(over="ignore"):
        return raw.astype(dtype, copy=False).reshape(shape)


def _text(b: bytes) -> str | bytes:
    """BYTES elements go to the engine as str when they are UTF-8 (ONNX Runtime turns a bytes object into its
    repr), else as bytes."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def _kind_name(dtype: np.dtype) -> str:
    return {"U": "strings", "O": "mixed values", "b": "booleans", "f": "floats", "i": "integers",
            "u": "integers"}.get(dtype.kind, str(dtype))


def _bytes_item(name: str, v: Any) -> bytes:
    raise InvalidInput(f"input {name!r}: BYTES 'data' must hold strings, got {type(v).__name__}")


def _flatten(name: str, data: list, depth: int = 0) -> list:
    if depth > MAX_DIMS:
        raise InvalidInput(f"input {name!r}: 'data' is nested deeper than {MAX_DIMS} levels")
    out: list = []
    for v in data:
        if isinstance(v, list):
            out.extend(_flatten(name, v, depth + 1))
        else:
            out.append(v)
    return out


def encode_bytes_elements(arr: np.ndarray) -> bytes:
    parts = []
    for v in arr.reshape(-1):
        b = v if isinstance(v, bytes) else str(v).encode("utf-8")
        parts.append(_LEN.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def _json_value_list(arr: np.ndarray) -> list:
    if arr.dtype == object or arr.dtype.kind in "SU":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]
    return arr.reshape(-1).tolist()


def output_bytes(arr: np.ndarray, dt: str) -> Any:
    """An output's raw bytes (little-endian; BYTES length-prefixed), without a copy when it is already so."""
    if dt == "BYTES":
        return encode_bytes_elements(arr)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if arr.flags.c_contiguous:
        return memoryview(arr.reshape(-1)).cast("B") if arr.size else b""
    return arr.tobytes()
