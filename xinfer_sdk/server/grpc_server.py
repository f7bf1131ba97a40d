"""KServe v2 / Triton ``inference.GRPCInferenceService``: the RPCs, shared by both gRPC transports
(the native one in ``h2grpc/``, the grpc.aio one in ``grpcio_server.py``).

Implemented: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer (tensors in
``raw_input_contents`` or typed ``contents``; outputs in ``raw_output_contents``), ModelStreamInfer,
ModelConfig, ModelStatistics, RepositoryIndex, RepositoryModelLoad / Unload (``CONTROL``: awaited off the event
loop), System- and CudaSharedMemory Status / Register / Unregister (the registry of ``shm.py``, shared with HTTP).
Request-level ``parameters`` (sequence_id, sequence_start, ...) go to ``Service.submit`` as a plain dict. The trace
and log RPCs answer UNIMPLEMENTED. Errors map to gRPC codes: InvalidInput -> INVALID_ARGUMENT, unknown model ->
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
from ..runtime import trace
from . import shm as _shm
from . import tracing
from .codec import OutputRequest, output_request, request_params, write_shm_output
from .extensions import model_control, repository_index, with_extensions
from .service import Served, Service
from .tensors import _text, check_shape, decode_binary, dtype_of, kserve_datatype, output_bytes

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
    "SystemSharedMemoryStatus": ("SystemSharedMemoryStatusRequest", "SystemSharedMemoryStatusResponse", True),
    "SystemSharedMemoryRegister": ("SystemSharedMemoryRegisterRequest", "SystemSharedMemoryRegisterResponse", True),
    "SystemSharedMemoryUnregister": ("SystemSharedMemoryUnregisterRequest", "SystemSharedMemoryUnregisterResponse",
                                     True),
    "CudaSharedMemoryStatus": ("CudaSharedMemoryStatusRequest", "CudaSharedMemoryStatusResponse", True),
    "CudaSharedMemoryRegister": ("CudaSharedMemoryRegisterRequest", "CudaSharedMemoryRegisterResponse", True),
    "CudaSharedMemoryUnregister": ("CudaSharedMemoryUnregisterRequest", "CudaSharedMemoryUnregisterResponse", True),
}
# unary RPCs whose handler returns an awaitable (slow: they run off the event loop)
CONTROL = {
    "RepositoryModelLoad": ("RepositoryModelLoadRequest", "RepositoryModelLoadResponse", True),
    "RepositoryModelUnload": ("RepositoryModelUnloadRequest", "RepositoryModelUnloadResponse", True),
}
UNSUPPORTED = {
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


def decode_inputs(request: Any, shm: _shm.SharedMemory | None = None) -> dict[str, np.ndarray]:
    """The input tensors: from ``raw_input_contents`` (one entry per input not in shared memory, in order), typed
    ``contents``, or a shared memory region named in the input's parameters."""
    raw = request.raw_input_contents
    if not request.inputs:
        raise InvalidInput("the request has no inputs")
    arrays: dict[str, np.ndarray] = {}
    in_shm = 0
    for t in request.inputs:
        name = t.name
        if name in arrays:
            raise InvalidInput(f"input {name!r} is given twice")
        shape = check_shape(name, list(t.shape))
        params = t.parameters
        if params and (_shm.REGION in params or _shm.BYTE_SIZE in params):
            ref = _shm.tensor_ref(shm, grpc_params(params, f"input {name!r}"), f"input {name!r}")
            arrays[name] = decode_binary(name, t.datatype, shape, ref.region.read(ref.offset, ref.size,
                                                                                  f"input {name!r}"))
            in_shm += 1
            continue
        if raw:
            i = len(arrays) - in_shm
            if i >= len(raw):
                break  # counted below
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
    if raw and len(raw) != len(request.inputs) - in_shm:
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries but the request has "
                           f"{len(request.inputs) - in_shm} inputs outside shared memory; give one per such input, "
                           "in order")
    return arrays


def grpc_params(params: Any, where: str = "request") -> dict[str, Any]:
    """A protobuf map of InferParameter (or ModelRepositoryParameter) -> a plain dict of Python values."""
    out: dict[str, Any] = {}
    for key, p in params.items():
        which = p.WhichOneof("parameter_choice")
        if which is None:
            raise InvalidInput(f"{where}: parameter {key!r} has no value")
        out[key] = getattr(p, which)
    return out


def request_timeout(request: Any) -> float | None:
    """Triton's ``timeout`` request parameter (microseconds) in seconds; None when absent or 0."""
    if "timeout" not in request.parameters:
        return None
    us = request.parameters["timeout"].int64_param
    if us < 0:
        raise InvalidInput("parameter 'timeout' must be a non-negative integer (microseconds)")
    return us / 1e6 if us else None


def _requested(served: Served, request: Any, shm: _shm.SharedMemory | None) -> OutputRequest:
    """The outputs to answer with (all when the request names none); unknown names are refused."""
    outputs = request.outputs
    if not outputs:
        return OutputRequest([s.name for s in served.output_specs], [True] * len(served.output_specs))
    wanted = []
    for o in outputs:
        entry: dict[str, Any] = {"name": o.name}
        if o.parameters:
            entry["parameters"] = {k: v for k, v in grpc_params(o.parameters, f"output {o.name!r}").items()
                                   if k in (_shm.REGION, _shm.BYTE_SIZE, _shm.OFFSET, "classification")}
        wanted.append(entry)
    return output_request(served.output_specs, wanted, True, shm=shm)


class KServeRpcs:
    """The RPCs as plain methods: request message in, response message out, XinferError raised."""

    def __init__(self, service: Service):
        self.svc = service
        self.pb = require("xinfer_sdk.server._proto.grpc_service_pb2", purpose="the gRPC endpoint", extra="serve")
        self.mc = require("xinfer_sdk.server._proto.model_config_pb2", purpose="the gRPC endpoint", extra="serve")
        self.json_format = require("google.protobuf.json_format", purpose="the gRPC endpoint")
        self._configs: dict[str, Any] = {}
        self.shm = _shm.registry(service)

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
        return self.pb.ServerMetadataResponse(**with_extensions(self.svc.server_metadata()))

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
        return self.pb.RepositoryIndexResponse(models=[M(**m) for m in repository_index(self.svc, request.ready)])

    async def RepositoryModelLoad(self, request: Any) -> Any:
        await model_control(self.svc, "load", request.model_name, grpc_params(request.parameters))
        return self.pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any) -> Any:
        await model_control(self.svc, "unload", request.model_name, grpc_params(request.parameters))
        return self.pb.RepositoryModelUnloadResponse()

    # -- shared memory ------------------------------------------------------------------------------------
    def SystemSharedMemoryStatus(self, request: Any) -> Any:
        R = self.pb.SystemSharedMemoryStatusResponse
        return R(regions={r["name"]: R.RegionStatus(**r) for r in self.shm.status(_shm.SYSTEM, request.name)})

    def SystemSharedMemoryRegister(self, request: Any) -> Any:
        self.shm.register_system(request.name, request.key, request.offset, request.byte_size)
        return self.pb.SystemSharedMemoryRegisterResponse()

    def SystemSharedMemoryUnregister(self, request: Any) -> Any:
        self.shm.unregister(_shm.SYSTEM, request.name)
        return self.pb.SystemSharedMemoryUnregisterResponse()

    def CudaSharedMemoryStatus(self, request: Any) -> Any:
        R = self.pb.CudaSharedMemoryStatusResponse
        return R(regions={r["name"]: R.RegionStatus(**r) for r in self.shm.status(_shm.CUDA, request.name)})

    def CudaSharedMemoryRegister(self, request: Any) -> Any:
        self.shm.register_cuda(request.name, bytes(request.raw_handle), request.device_id, request.byte_size)
        return self.pb.CudaSharedMemoryRegisterResponse()

    def CudaSharedMemoryUnregister(self, request: Any) -> Any:
        self.shm.unregister(_shm.CUDA, request.name)
        return self.pb.CudaSharedMemoryUnregisterResponse()

    # -- inference ----------------------------------------------------------------------------------------
    def submit(self, request: Any, call_timeout: float | None = None, held: int = 0,
               traceparent: bytes | str | None = None) -> tuple[Served, asyncio.Future, Any, OutputRequest]:
        """Decode, validate and enqueue one ModelInferRequest: (served, future of the outputs, the core's
        handle for cancel(), the outputs to answer with). ``call_timeout`` is the gRPC deadline left (seconds), if
        any; ``held`` the calls the client's connection already has open (``Service.submit``: fairness between
        connections). When tracing is on, the span travels in ``want.trace`` and ``end_trace`` closes it."""
        served = self.svc.get(request.model_name, request.model_version)
        tr = tracing.TRACER
        span = tr.begin(served.name, served.version, traceparent, "grpc") if tr is not None else None
        nvtx = trace.NVTX
        if nvtx:
            trace.push("xinfer/decode")
        try:
            try:
                inputs = decode_inputs(request, self.shm)
                want = _requested(served, request, self.shm)
                timeout = request_timeout(request)
                params = request_params(grpc_params(request.parameters)) if request.parameters else None
            except InvalidInput:
                served.reject("InvalidInput")
                raise
            if call_timeout is not None and (timeout is None or call_timeout < timeout):
                timeout = call_timeout
            fut, handle = self.svc.submit(served, inputs, timeout, asyncio.get_running_loop(), held=held,
                                          params=params)
        except BaseException as exc:
            if span is not None:
                tr.end(span, None, exc)
            raise
        finally:
            if nvtx:
                trace.pop()
        if span is not None:
            want.trace = (tr, span)
        return served, fut, handle, want

    @staticmethod
    def end_trace(want: OutputRequest | None, handle: Any, error: BaseException | None) -> None:
        """Close the request's span (if traced) once its answer is sent."""
        if want is not None and want.trace is not None:
            tr, span = want.trace
            want.trace = None
            tr.end(span, handle, error)

    def infer_response(self, served: Served, request: Any, outputs: dict[str, np.ndarray],
                       want: OutputRequest) -> Any:
        pb = self.pb
        nvtx = trace.NVTX
        if nvtx:
            trace.push("xinfer/encode")
        try:
            Out = pb.ModelInferResponse.InferOutputTensor
            tensors, raws = [], []
            refs = want.shm
            for i, n in enumerate(want.names):
                arr = outputs[n]
                dt = kserve_datatype(arr.dtype)
                ref = refs[i] if refs is not None else None
                tensors.append(Out(name=n, datatype=dt, shape=arr.shape))
                if ref is not None:  # as Triton: described, no data, an empty raw entry keeps the positions
                    write_shm_output(n, ref, arr, dt)
                    raws.append(b"")
                    continue
                raw = output_bytes(arr, dt)
                raws.append(raw if isinstance(raw, bytes) else bytes(raw))
            return pb.ModelInferResponse(model_name=served.name, model_version=served.version, id=request.id,
                                         outputs=tensors, raw_output_contents=raws)
        finally:
            if nvtx:
                trace.pop()

    def stream_error(self, request_id: str, exc: BaseException) -> Any:
        """A ModelStreamInfer answer for a failed request (the stream itself goes on)."""
        msg = grpc_status(exc, "gRPC stream")[1]
        return self.pb.ModelStreamInferResponse(error_message=msg, infer_response=self.pb.ModelInferResponse(
            id=request_id))


# -- the grpc.aio transport ----------------------------------------------------------------------------------
