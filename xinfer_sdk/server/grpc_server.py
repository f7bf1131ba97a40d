"""KServe v2 / Triton ``inference.GRPCInferenceService``: the RPCs (shared by both gRPC transports) and the
grpc.aio transport (``--grpc-impl grpcio``; the default native one is in ``h2grpc/``).

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
import time
from collections.abc import AsyncIterator
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
    def submit(self, request: Any, call_timeout: float | None = None) -> tuple[Served, asyncio.Future, Any, list[str]]:
        """Decode, validate and enqueue one ModelInferRequest: (served, future of the outputs, the core's
        handle for cancel(), output names). ``call_timeout`` is the gRPC deadline left (seconds), if any."""
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
        fut, handle = self.svc.submit(served, inputs, timeout, asyncio.get_running_loop())
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
class InferenceServicer:
    """grpc.aio handlers (coroutines on the server's loop) around ``KServeRpcs``."""

    def __init__(self, service: Service):
        self.rpcs = KServeRpcs(service)
        self.svc = service
        self.pb = self.rpcs.pb
        grpc = require("grpc", purpose="the gRPC endpoint")
        self.codes = {c.value[0]: c for c in grpc.StatusCode}

    def _fail(self, context: Any, exc: BaseException, empty: Any) -> Any:
        code, msg = grpc_status(exc)
        context.set_code(self.codes[code])
        context.set_details(msg)
        return empty

    def _auth(self, context: Any) -> None:
        if self.svc.auth_required:
            value = None
            for k, v in context.invocation_metadata() or ():
                if k == "authorization":
                    value = v
            self.svc.check_auth(value)

    def unary(self, rpc: str, response: Any, auth: bool):
        fn = self.rpcs.handler(rpc)

        async def handler(request: Any, context: Any) -> Any:
            try:
                if auth:
                    self._auth(context)
                return fn(request)
            except Exception as exc:
                return self._fail(context, exc, response())

        return handler

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        try:
            self._auth(context)
            served, fut, handle, names = self.rpcs.submit(request)
            try:
                outputs = await fut
            except asyncio.CancelledError:
                served.batcher.cancel(handle)
                raise
            return self.rpcs.infer_response(served, request, outputs, names)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._fail(context, exc, self.pb.ModelInferResponse())

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        """Requests are pipelined (each enters the batching core as it arrives); answers keep their order."""
        pb = self.pb
        try:
            self._auth(context)
        except XinferError as exc:
            yield pb.ModelStreamInferResponse(error_message=str(exc))
            return
        pending: asyncio.Queue = asyncio.Queue()

        async def reader() -> None:
            try:
                async for request in request_iterator:
                    try:
                        pending.put_nowait((request, self.rpcs.submit(request), None))
                    except Exception as exc:
                        pending.put_nowait((request, None, exc))
            finally:
                pending.put_nowait(None)

        task = asyncio.ensure_future(reader())
        try:
            while True:
                item = await pending.get()
                if item is None:
                    break
                request, submitted, exc = item
                if submitted is not None:
                    served, fut, _handle, names = submitted
                    try:
                        outputs = await fut
                        yield pb.ModelStreamInferResponse(
                            infer_response=self.rpcs.infer_response(served, request, outputs, names))
                        continue
                    except Exception as e:
                        exc = e
                yield self.rpcs.stream_error(request.id, exc)
        finally:
            task.cancel()


def _unsupported(name: str):
    async def handler(request: Any, context: Any) -> Any:
        grpc = require("grpc")
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, unsupported_message(name))

    return handler


def add_to_server(server: Any, servicer: InferenceServicer) -> None:
    """Register every RPC of the service with explicit (de)serializers (no generated *_pb2_grpc module)."""
    grpc = require("grpc", purpose="the gRPC endpoint")
    pb = servicer.pb
    uu = grpc.unary_unary_rpc_method_handler
    handlers = {}
    for name, (req, resp, auth) in UNARY.items():
        fn = servicer.ModelInfer if name == "ModelInfer" else servicer.unary(name, getattr(pb, resp), auth)
        handlers[name] = uu(fn, request_deserializer=getattr(pb, req).FromString,
                            response_serializer=getattr(pb, resp).SerializeToString)
    for name, (req, resp) in UNSUPPORTED.items():
        handlers[name] = uu(_unsupported(name), request_deserializer=getattr(pb, req).FromString,
                            response_serializer=getattr(pb, resp).SerializeToString)
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
        servicer.ModelStreamInfer, request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelStreamInferResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


class _DepartedClients(logging.Filter):
    """grpc.aio logs an ``ExecuteBatchError`` traceback whenever a client leaves while its answer is being sent
    (the probe report: one per departed client, a way to flood the log). Those records are counted and dropped;
    the first one of each minute is kept at DEBUG."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0
        self._last = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0] if record.exc_info else None
        if (exc is not None and exc.__name__ == "ExecuteBatchError") or "ExecuteBatchError" in str(record.msg):
            self.dropped += 1
            now = time.monotonic()
            if now - self._last >= 60:
                self._last = now
                log.debug("gRPC (grpcio): a client left while its answer was being sent (%d so far)", self.dropped)
            return False
        return True


DEPARTED = _DepartedClients()


def grpcio_options(max_message: int, net: Any, max_connection_age: float | None) -> list[tuple[str, Any]]:
    """The server's limits as grpcio channel arguments (what C-core offers; docs/security.md compares them with
    the native transport)."""
    opts: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", max(max_message, 64 << 20)),
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", 256),  # as the native transport's SETTINGS_MAX_CONCURRENT_STREAMS
        ("grpc.max_metadata_size", 16384),  # as its SETTINGS_MAX_HEADER_LIST_SIZE
        # keepalive enforcement (C-core's defaults, stated): a PING more often than every 5 min without a call is a
        # strike; after 2 strikes GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings")
        ("grpc.http2.min_ping_interval_without_data_ms", 300_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.keepalive_permit_without_calls", 0),
    ]
    if net is not None:
        opts += [("grpc.max_connection_idle_ms", int(net.idle_timeout * 1000)),  # GOAWAY after idle_timeout
                 ("grpc.server_handshake_timeout_ms", int(net.header_timeout * 1000)),
                 ("grpc.max_allowed_incoming_connections", int(net.max_connections))]
    if max_connection_age:  # GOAWAY old connections so clients re-resolve and reach new replicas
        opts += [("grpc.max_connection_age_ms", int(max_connection_age * 1000)),
                 ("grpc.max_connection_age_grace_ms", 30_000)]
    return opts


class GrpcServer:
    """The grpc.aio transport (C-core): ``--grpc-impl grpcio``.

    Limits: grpcio has no body timeout, no server-wide request-byte budget (``budget`` is kept for the
    interface) and no flood counters beyond its ping policy; see ``grpcio_options``. Drain: grpc.aio cannot send a
    GOAWAY while it keeps listening, so ``begin_drain`` starts grpc's own stop (GOAWAY, listening socket closed at
    once, open calls finish) and ``close_listener`` has nothing left to do; connections arriving during the drain
    are refused by the kernel, not answered with GOAWAY.
    """

    def __init__(self, service: Service, *, max_message: int, max_connection_age: float | None = None,
                 net: Any = None, budget: Any = None):
        self.net, self.budget = net, budget  # the network limits (limits.py); grpcio enforces what it offers
        self.service = service
        self.max_message = int(max_message)
        self.max_connection_age = max_connection_age
        self._server: Any = None
        self._stopping: asyncio.Future | None = None

    async def start(self, host: str, port: int) -> int:
        grpc = require("grpc", purpose="the gRPC endpoint")
        cygrpc = logging.getLogger("grpc._cython.cygrpc")
        if DEPARTED not in cygrpc.filters:
            cygrpc.addFilter(DEPARTED)
        self._server = grpc.aio.server(options=grpcio_options(self.max_message, self.net, self.max_connection_age))
        add_to_server(self._server, InferenceServicer(self.service))
        bound = self._server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"cannot bind the gRPC port {host}:{port} (in use?)")
        await self._server.start()
        return bound

    def pending_answers(self) -> int:
        return 0

    def begin_drain(self) -> None:
        """grpc's graceful stop without a deadline: GOAWAY, no new calls, open calls finish (``stop`` cuts them)."""
        if self._server is not None and self._stopping is None:
            self._stopping = asyncio.ensure_future(self._server.stop(None))

    async def close_listener(self) -> None:
        """Nothing to do: grpc.aio closed its listening socket when the drain began."""

    async def stop(self, grace: float | None) -> None:
        if self._server is not None:
            await self._server.stop(grace)  # the shortest grace of all stop calls wins
        if self._stopping is not None:
            await self._stopping
