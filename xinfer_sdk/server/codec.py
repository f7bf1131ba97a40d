"""KServe v2 HTTP requests and responses: JSON ``data``, Triton's binary tensor extension, request-level
``parameters`` (``request_params``), and tensors in shared memory (``shared_memory_region`` parameters, shm.py).
The tensor-level pieces (datatypes, shapes, raw bytes, BYTES elements) are in ``tensors.py``.

Every malformed request raises ``InvalidInput`` naming the input and the problem; nothing here trusts a
size or a shape from the client before comparing it with the bytes that actually arrived (a shape claiming
10^12 elements is refused before anything is allocated).

Binary tensor extension (HTTP): the body is ``<JSON header><tensor bytes...>``; the header length is in
``Inference-Header-Content-Length``; each input with ``parameters.binary_data_size`` takes that many bytes,
in input order. Outputs come back binary when asked for (``parameters.binary_data`` per output, or
``parameters.binary_data_output`` for all). BYTES tensors are length-prefixed (4-byte little-endian).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInput
from . import shm as _shm
from .tensors import (  # noqa: F401 (re-exported: the tensor helpers were defined here before)
    _LEN,
    DTYPES,
    MAX_DIM_PRODUCT,
    MAX_DIMS,
    _json_value_list,
    _text,
    check_shape,
    decode_binary,
    decode_json_data,
    dtype_of,
    encode_bytes_elements,
    kserve_datatype,
    output_bytes,
)


# ----------------------------------------------------------------------------------------------------
# requests
class OutputRequest:
    """Which outputs a client wants and in which form (binary or JSON, or written into a shared memory region:
    ``shm[i]`` is a ``shm.ShmRef`` or None; ``shm`` itself is None when no output goes to shared memory)."""

    __slots__ = ("names", "binary", "shm", "trace")

    def __init__(self, names: list[str], binary: list[bool], shm: list[Any] | None = None):
        self.names = names
        self.binary = binary
        self.shm = shm
        self.trace: tuple[Any, Any] | None = None  # (tracer, span) of a traced gRPC request, closed once answered


def _params(obj: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    p = obj.get("parameters")
    if p is None:
        return {}
    if not isinstance(p, dict):
        raise InvalidInput(f"{where}: 'parameters' must be a JSON object")
    return p


def _bool_param(params: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    v = params.get(key, default)
    if not isinstance(v, bool):
        raise InvalidInput(f"{where}: parameter {key!r} must be true or false, got {v!r}")
    return v


def output_request(specs: Sequence[Any], requested: Any, default_binary: bool, *, where: str = "request",
                   shm: Any = None) -> OutputRequest:
    """Check the ``outputs`` list of a request against the model's outputs (before anything runs). ``shm``: the
    server's shared-memory registry (outputs may then name a region to be written into)."""
    known = [s.name for s in specs]
    if requested is None:
        return OutputRequest(known, [default_binary] * len(known))
    if not isinstance(requested, list):
        raise InvalidInput(f"{where}: 'outputs' must be a list of objects with a 'name'")
    names, binary = [], []
    refs: list[Any] | None = None
    for i, o in enumerate(requested):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise InvalidInput(f"{where}: each entry of 'outputs' must be an object with a string 'name'")
        name = o["name"]
        if name not in known:
            raise InvalidInput(f"unknown output {name!r}; the model's outputs are {', '.join(map(repr, known))}")
        p = _params(o, f"output {name!r}")
        if "classification" in p:
            raise InvalidInput(f"output {name!r}: the classification extension is not supported")
        names.append(name)
        binary.append(_bool_param(p, "binary_data", f"output {name!r}", default_binary))
        if _shm.REGION in p or _shm.BYTE_SIZE in p:
            ref = _shm.tensor_ref(shm, p, f"output {name!r}")
            if refs is None:
                refs = [None] * i
            refs.append(ref)
        elif refs is not None:
            refs.append(None)
    return OutputRequest(names, binary, refs)


# request-level parameters with a fixed type (KServe v2 / Triton); any other key may hold a string, number or bool
_PARAM_TYPES = {"sequence_id": ((int, str), "a non-negative integer or a string"),
                "sequence_start": ((bool,), "true or false"), "sequence_end": ((bool,), "true or false"), "priority": ((int,), "a non-negative integer"),
                "timeout": ((int,), "a non-negative integer (microseconds)"),
                "binary_data_output": ((bool,), "true or false")}


def request_params(params: Mapping[str, Any], where: str = "request") -> dict[str, Any] | None:
    """The request-level ``parameters`` as a plain dict for ``Service.submit`` (None when there are none); a value
    of the wrong type is refused naming the parameter."""
    if not params:
        return None
    for key, v in params.items():
        want = _PARAM_TYPES.get(key)
        if want is not None:
            types, what = want
            if bool in types:
                ok = type(v) is bool
            else:  # an int parameter takes no bool (JSON true is not 1 here) and no negative number
                ok = isinstance(v, types) and type(v) is not bool and not (type(v) is int and v < 0)
            if not ok:
                raise InvalidInput(f"{where}: parameter {key!r} must be {what}, got {v!r}")
        elif not isinstance(v, (str, int, float, bool)):
            raise InvalidInput(f"{where}: parameter {key!r} must be a string, number or boolean, got "
                               f"{type(v).__name__}")
    return dict(params)


def timeout_param(params: Mapping[str, Any], where: str = "request") -> float | None:
    """Triton's per-request ``timeout`` parameter (microseconds) -> seconds."""
    t = params.get("timeout")
    if t is None:
        return None
    if type(t) is not int or t < 0:
        raise InvalidInput(f"{where}: parameter 'timeout' must be a non-negative integer (microseconds), got {t!r}")
    return t / 1e6 if t else None


class InferRequest:
    __slots__ = ("id", "inputs", "outputs", "timeout", "params")

    def __init__(self, req_id: str | None, inputs: dict[str, np.ndarray], outputs: OutputRequest,
                 timeout: float | None, params: dict[str, Any] | None = None):
        self.id = req_id
        self.inputs = inputs
        self.outputs = outputs
        self.timeout = timeout
        self.params = params  # the request-level parameters (Service.submit's ``params``), None when absent


def decode_http_request(body: bytes, header_length: int | None, output_specs: Sequence[Any], shm: Any = None
                        ) -> InferRequest:
    """Parse a KServe v2 HTTP infer body (JSON, or JSON + binary tensors; ``shm``: the shared-memory registry, for
    inputs and outputs that name a region)."""
    if header_length is None:
        head, binary = body, b""
    else:
        if header_length > len(body):
            raise InvalidInput(f"Inference-Header-Content-Length is {header_length} but the body has only "
                               f"{len(body)} bytes")
        head, binary = body[:header_length], memoryview(body)[header_length:]
    if not head:
        raise InvalidInput("empty request body; expected a KServe v2 JSON inference request")
    try:
        doc = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the request body is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InvalidInput("the request body must be a JSON object with 'inputs'")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("the request needs a non-empty 'inputs' list")
    req_id = doc.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise InvalidInput("'id' must be a string")
    params = _params(doc, "request")
    default_binary = _bool_param(params, "binary_data_output", "request", False)
    timeout = timeout_param(params)
    req_params = request_params(params)
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    nbin = len(binary)
    for i, t in enumerate(inputs):
        if not isinstance(t, dict):
            raise InvalidInput(f"inputs[{i}] must be a JSON object with name, datatype, shape")
        name = t.get("name")
        if not isinstance(name, str):
            raise InvalidInput(f"inputs[{i}]: 'name' must be a string")
        if name in arrays:
            raise InvalidInput(f"input {name!r} is given twice")
        datatype = t.get("datatype")
        shape = check_shape(name, t.get("shape"))
        p = t.get("parameters")
        size = p.get("binary_data_size") if type(p) is dict else None
        if p is not None and type(p) is not dict:
            raise InvalidInput(f"input {name!r}: 'parameters' must be a JSON object")
        if p and (_shm.REGION in p or _shm.BYTE_SIZE in p):
            if size is not None or "data" in t:
                raise InvalidInput(f"input {name!r}: give its tensor either in shared memory or as 'data' / "
                                   "binary_data_size, not both")
            ref = _shm.tensor_ref(shm, p, f"input {name!r}")
            arrays[name] = decode_binary(name, datatype, shape, ref.region.read(ref.offset, ref.size,
                                                                                f"input {name!r}"))
        elif size is not None:
            if type(size) is not int or size < 0:
                raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer, got {size!r}")
            if offset + size > nbin:
                raise InvalidInput(f"input {name!r}: binary_data_size {size} goes past the end of the binary data "
                                   f"({nbin - offset} bytes left)")
            arrays[name] = decode_binary(name, datatype, shape, binary[offset:offset + size])
            offset += size
        else:
            if "data" not in t:
                raise InvalidInput(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
            arrays[name] = decode_json_data(name, datatype, shape, t["data"])
    if offset != nbin:
        raise InvalidInput(f"{nbin - offset} bytes of binary data after the JSON header are not claimed by any "
                           "input's binary_data_size")
    outputs = output_request(output_specs, doc.get("outputs"), default_binary, shm=shm)
    return InferRequest(req_id, arrays, outputs, timeout, req_params)


# ----------------------------------------------------------------------------------------------------
# responses
def write_shm_output(name: str, ref: Any, arr: np.ndarray, dt: str) -> int:
    """Write an output into the region the client asked for; returns the bytes written."""
    raw = output_bytes(arr, dt)
    n = memoryview(raw).nbytes
    ref.region.write(ref.offset, ref.size, raw, f"output {name!r}")
    return n


def encode_http_response(model_name: str, version: str, req_id: str | None, outputs: Mapping[str, np.ndarray],
                         want: OutputRequest) -> tuple[bytes, int | None]:
    """Response body and the JSON header length (None when no output is binary: plain JSON)."""
    parts = []
    blobs = []
    refs = want.shm
    for i, (name, binary) in enumerate(zip(want.names, want.binary)):
        arr = outputs[name]
        dt = kserve_datatype(arr.dtype)
        shape = ",".join(map(str, arr.shape))
        ref = refs[i] if refs is not None else None
        if ref is not None:
            # as Triton: name, datatype and shape only (perf_analyzer reads binary_data_size from any parameters)
            write_shm_output(name, ref, arr, dt)
            parts.append(f'{{"name":{json.dumps(name)},"datatype":"{dt}","shape":[{shape}]}}')
        elif binary:
            raw = output_bytes(arr, dt)
            blobs.append(raw)
            parts.append(f'{{"name":{json.dumps(name)},"datatype":"{dt}","shape":[{shape}],'
                         f'"parameters":{{"binary_data_size":{memoryview(raw).nbytes}}}}}')
        else:
            parts.append(f'{{"name":{json.dumps(name)},"datatype":"{dt}","shape":[{shape}],'
                         f'"data":{json.dumps(_json_value_list(arr))}}}')
    rid = f'"id":{json.dumps(req_id)},' if req_id else ""
    head = (f'{{{rid}"model_name":{json.dumps(model_name)},"model_version":"{version}",'
            f'"outputs":[{",".join(parts)}]}}').encode()
    if not blobs:
        return head, None
    return b"".join((head, *blobs)), len(head)


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()
