"""KServe v2 / Triton ``inference.GRPCInferenceService``: the RPCs, shared by both gRPC transports
(the native one in ``h2grpc/``, the grpc.aio one in ``grpcio_server.py``).

Implemented: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer (tensors in
``raw_input_contents`` or typed ``contents``; outputs in ``raw_output_contents``), ModelStreamInfer,
ModelConfig, ModelStatistics, RepositoryIndex. The shared-memory, repository load/unload, trace and log
RPCs answer UNIMPLEMENTED. Errors map to gRPC codes: InvalidInput -> INVALID_ARGUMENT, unknown model ->
NOT_FOUND, API key -> UNAUTHENTICATED, full queue -> RESOURCE_EXHAUSTED, draining -> UNAVAILABLE, deadline ->
DEADLINE_EXCEEDED, engine failure and anything unexpected -> INTERNAL (no traceback reaches the client).

``KServeRpcs`` holds the RPCs as plain methods (request message in, response message out, errors raised);
a transport only moves bytes, finds the ``authorization`` metadata and maps errors with ``grpc_status``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import numpy as np

from .._lazy import require
from ..errors import InvalidInput, XinferError
from .codec import _text, check_shape, decode_binary, dtype_of, encode_bytes_elements, kserve_datatype, output_request
from .service import Served, Service

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
# gRPC status codes (grpc/status.h); numbers so the native transport needs no grpcio
OK, CANCELLED, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND = 0, 1, 3, 4, 5
RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = 8, 12, 13, 14, 16
# our errors (by their HTTP status) -> gRPC status code
_CODES = {400: INVALID_ARGUMENT, 401: UNAUTHENTICATED, 404: NOT_FOUND, 405: UNIMPLEMENTED, 429: RESOURCE_EXHAUSTED,
          499: CANCELLED, 503: UNAVAILABLE, 504: DEADLINE_EXCEEDED, 500: INTERNAL}
INTERNAL_MESSAGE = "internal server error (see the server log)"
# typed contents field per datatype (FP16/BF16 travel only as raw bytes, as in Triton)
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents", "BYTES": "bytes_contents"}
# rpc -> (request message, response message, needs the API key); ModelStreamInfer is the one streaming RPC
UNARY = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse", False),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse", False),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse", True),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse", True),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse", True),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse", True),
    "ModelConfig": ("ModelConfigRequest", "ModelConfigResponse", True),
    "ModelStatistics": ("ModelStatisticsRequest", "ModelStatisticsResponse", True),
    "RepositoryIndex": ("RepositoryIndexRequest", "RepositoryIndexResponse", True),
}
UNSUPPORTED = {
    "RepositoryModelLoad": ("RepositoryModelLoadRequest", "RepositoryModelLoadResponse"),
    "RepositoryModelUnload": ("RepositoryModelUnloadRequest", "RepositoryModelUnloadResponse"),
    "SystemSharedMemoryStatus": ("SystemSharedMemoryStatusRequest", "SystemSharedMemoryStatusResponse"),
    "SystemSharedMemoryRegister": ("SystemSharedMemoryRegisterRequest", "SystemSharedMemoryRegisterResponse"),
    "SystemSharedMemoryUnregister": ("SystemSharedMemoryUnregisterRequest", "SystemSharedMemoryUnregisterResponse"),
    "CudaSharedMemoryStatus": ("CudaSharedMemoryStatusRequest", "CudaSharedMemoryStatusResponse"),
    "CudaSharedMemoryRegister": ("CudaSharedMemoryRegisterRequest", "CudaSharedMemoryRegisterResponse"),
    "CudaSharedMemoryUnregister": ("CudaSharedMemoryUnregisterRequest", "CudaSharedMemoryUnregisterResponse"),
    "TraceSetting": ("TraceSettingRequest", "TraceSettingResponse"),
    "LogSettings": ("LogSettingsRequest", "LogSettingsResponse"),
}


def grpc_status(exc: BaseException, where: str = "gRPC") -> tuple[int, str]:
    """(status code, message) for an error; anything not an XinferError is logged and answered INTERNAL."""
    if isinstance(exc, XinferError):
        return _CODES.get(exc.http_status, INTERNAL), str(exc)
    log.error("%s: unexpected error: %r", where, exc, exc_info=exc)
    return INTERNAL, INTERNAL_MESSAGE


def unsupported_message(rpc: str) -> str:
    return f"{rpc} is not supported by xinfer-sdk"


def decode_inputs(request: Any) -> dict[str, np.ndarray]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries but the request has {len(request.inputs)} "
                           "inputs; give one per input, in order")
    if not request.inputs:
        raise InvalidInput("the request has no inputs")
    arrays: dict[str, np.ndarray] = {}
    for i, t in enumerate(request.inputs):
        name = t.name
        if name in arrays:
            raise InvalidInput(f"input {name!r} is given twice")
        shape = check_shape(name, list(t.shape))
        if raw:
            arrays[name] = decode_binary(name, t.datatype, shape, raw[i])
            continue
        dtype = dtype_of(name, t.datatype)
        field = _CONTENTS.get(t.datatype)
        if field is None:
            raise InvalidInput(f"input {name!r}: {t.datatype} tensors must be sent in raw_input_contents")
        values = getattr(t.contents, field)
        count = math.prod(shape)
        if len(values) != count:
            raise InvalidInput(f"input {name!r}: {len(values)} values in contents.{field}, but shape {list(shape)} "
                               f"needs {count}")
        if dtype is None:
            arr = np.empty(count, dtype=object)
            arr[:] = [_text(v) for v in values]
        else:
            arr = np.array(values, dtype=np.float64 if dtype.kind == "f" else None)
            if dtype.kind in "iu" and arr.size:
                info = np.iinfo(dtype)
                if arr.min() < info.min or arr.max() > info.max:
                    raise InvalidInput(f"input {name!r}: a value is outside the {t.datatype} range")
            arr = arr.astype(dtype) if arr.size else np.zeros(0, dtype)
        arrays[name] = arr.reshape(shape)
    return arrays


def request_timeout(request: Any) -> float | None:
    """Triton's ``timeout`` request parameter (microseconds) in seconds; None when absent or 0."""
    if "timeout" not in request.parameters:
        return None
    us = request.parameters["timeout"].int64_param
    if us < 0:
        raise InvalidInput("parameter 'timeout' must be a non-negative integer (microseconds)")
    return us / 1e6 if us else None


def _requested(served: Served, request: Any) -> list[str]:
    """The outputs to answer with (all when the request names none); unknown names are refused."""
    outputs = request.outputs
    if not outputs:
        return [s.name for s in served.output_specs]
    names = []
    for o in outputs:
        name = o.name
        if o.parameters and "classification" in o.parameters:
            raise InvalidInput(f"output {name!r}: the classification extension is not supported")
        names.append(name)
    known = [s.name for s in served.output_specs]
    if any(n not in known for n in names):
        output_request(served.output_specs, [{"name": n} for n in names], True)  # raises, naming the output
    return names


class KServeRpcs:
    """The RPCs as plain methods: request message in, response message out, XinferError raised."""

    def __init__(self, service: Service):
        self.svc = service
        self.pb = require("xinfer_sdk.server._proto.grpc_service_pb2", purpose="the gRPC endpoint", extra="serve")
        self.mc = require("xinfer_sdk.server._proto.model_config_pb2", purpose="the gRPC endpoint", extra="serve")
        self.json_format = require("google.protobuf.json_format", purpose="the gRPC endpoint")
        self._configs: dict[str, Any] = {}

    def handler(self, rpc: str) -> Any:
        return getattr(self, rpc)

    # -- health and metadata ------------------------------------------------------------------------------
    def ServerLive(self, request: Any) -> Any:
        return self.pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any) -> Any:
        return self.pb.ServerReadyResponse(ready=self.svc.ready)

    def ModelReady(self, request: Any) -> Any:
        return self.pb.ModelReadyResponse(ready=self.svc.model_ready(request.name, request.version))

    def ServerMetadata(self, request: Any) -> Any:
        return self.pb.ServerMetadataResponse(**self.svc.server_metadata())

    def ModelMetadata(self, request: Any) -> Any:
        pb = self.pb
        md = self.svc.get(request.name, request.version).metadata
        T = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(name=md["name"], versions=md["versions"], platform=md["platform"],
                                        inputs=[T(**t) for t in md["inputs"]], outputs=[T(**t) for t in md["outputs"]])

    def ModelConfig(self, request: Any) -> Any:
        served = self.svc.get(request.name, request.version)
        cfg = self._configs.get(served.name)
        if cfg is None:
            cfg = self.json_format.ParseDict(served.config, self.mc.ModelConfig(), ignore_unknown_fields=True)
            self._configs[served.name] = cfg
        return self.pb.ModelConfigResponse(config=cfg)

    def ModelStatistics(self, request: Any) -> Any:
        doc = self.svc.statistics(request.name or None, request.version or None)
        return self.json_format.ParseDict(doc, self.pb.ModelStatisticsResponse(), ignore_unknown_fields=True)

    def RepositoryIndex(self, request: Any) -> Any:
        M = self.pb.RepositoryIndexResponse.ModelIndex
        return self.pb.RepositoryIndexResponse(models=[M(**m) for m in self.svc.repository_index()])

    # -- inference ----------------------------------------------------------------------------------------
    def submit(self, request: Any, call_timeout: float | None = None,
               held: int = 0) -> tuple[Served, asyncio.Future, Any, list[str]]:
        """Decode, validate and enqueue one ModelInferRequest: (served, future of the outputs, the core's
        handle for cancel(), output names). ``call_timeout`` is the gRPC deadline left (seconds), if any; ``held``
        the calls the client's connection already has open (``Service.submit``: fairness between connections)."""
        served = self.svc.get(request.model_name, request.model_version)
        try:
            inputs = decode_inputs(request)
            names = _requested(served, request)
            timeout = request_timeout(request)
        except InvalidInput:
            served.reject("InvalidInput")
            raise
        if call_timeout is not None and (timeout is None or call_timeout < timeout):
            timeout = call_timeout
        fut, handle = self.svc.submit(served, inputs, timeout, asyncio.get_running_loop(), held=held)
        return served, fut, handle, names

    def infer_response(self, served: Served, request: Any, outputs: dict[str, np.ndarray], names: list[str]) -> Any:
        pb = self.pb
        Out = pb.ModelInferResponse.InferOutputTensor
        tensors, raws = [], []
        for n in names:
            arr = outputs[n]
            dt = kserve_datatype(arr.dtype)
            tensors.append(Out(name=n, datatype=dt, shape=arr.shape))
            raws.append(encode_bytes_elements(arr) if dt == "BYTES" else arr.tobytes())
        return pb.ModelInferResponse(model_name=served.name, model_version=served.version, id=request.id,
                                     outputs=tensors, raw_output_contents=raws)

    def stream_error(self, request_id: str, exc: BaseException) -> Any:
        """A ModelStreamInfer answer for a failed request (the stream itself goes on)."""
        msg = grpc_status(exc, "gRPC stream")[1]
        return self.pb.ModelStreamInferResponse(error_message=msg, infer_response=self.pb.ModelInferResponse(
            id=request_id))


# -- the grpc.aio transport ----------------------------------------------------------------------------------
