"""Lean asyncio clients for load generation: each exposes ``send() -> awaitable status`` so one load driver
(closed or open loop) measures the in-process core, HTTP and gRPC the same way.

* ``InProcess``: ``model.infer_async`` straight into the batching core (what HTTP costs is the difference).
* ``HttpTransport``: KServe v2 over HTTP/1.1 keep-alive, binary tensor extension, one request body encoded
  once; responses parsed with httptools (status + body length only).
* ``GrpcTransport``: ``inference.GRPCInferenceService/ModelInfer`` over grpc.aio with the request serialized
  once (raw bytes in and out).

A status is ``"ok"`` or an error kind (``"429"``, ``"503"``, ``"RESOURCE_EXHAUSTED"``, ``"connection"``...).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .._lazy import require
from ..errors import UserError, XinferError
from .codec import encode_bytes_elements, kserve_datatype


def sample_inputs(specs: list[Any], batch: int = 1, seed: int = 0, shapes: Mapping[str, list[int]] | None = None
                  ) -> dict[str, np.ndarray]:
    """Random inputs matching a model's IO spec (dynamic dims -> ``batch`` for axis 0, else 1 or ``shapes``)."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in specs:
        shape = list((shapes or {}).get(s.name) or [])
        if not shape:
            shape = [batch if (j == 0 and d < 0) else (1 if d < 0 else d) for j, d in enumerate(s.shape)]
        dtype = s.dtype
        if dtype == "bytes":
            arr = np.array([b"x" * 8] * math.prod(shape), dtype=object).reshape(shape)
        elif dtype == "bool":
            arr = rng.integers(0, 2, shape).astype(bool)
        elif np.dtype(dtype).kind in "iu":
            arr = rng.integers(0, 2, shape).astype(dtype)
        else:
            arr = rng.standard_normal(shape).astype(dtype)
        out[s.name] = arr
    return out


class InProcess:
    """Drive a loaded ``Model`` directly (no network, no codec)."""

    name = "in-process"

    def __init__(self, model: Any, inputs: Mapping[str, np.ndarray]):
        self.model = model
        self.validated = model.validate(inputs)
        self.inputs = inputs

    async def send(self) -> str:
        try:
            await self.model.infer_async(self.inputs, validated=self.validated)
            return "ok"
        except XinferError as exc:
            return type(exc).__name__

    async def close(self) -> None:
        pass


def encode_http_infer(inputs: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> tuple[bytes, int]:
    """A binary-tensor KServe v2 request body and its JSON header length."""
    tensors, blobs = [], []
    for name, arr in inputs.items():
        dt = kserve_datatype(arr.dtype)
        raw = encode_bytes_elements(arr) if dt == "BYTES" else np.ascontiguousarray(arr).tobytes()
        tensors.append({"name": name, "datatype": dt, "shape": list(arr.shape),
                        "parameters": {"binary_data_size": len(raw)}})
        blobs.append(raw)
    doc: dict[str, Any] = {"inputs": tensors, "parameters": {"binary_data_output": True}}
    if outputs:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
    head = json.dumps(doc, separators=(",", ":")).encode()
    return head + b"".join(blobs), len(head)


class _HttpConn(asyncio.Protocol):
    def __init__(self) -> None:
        httptools = require("httptools", purpose="the HTTP load generator")
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.body_len = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # a broken response: fail the waiter, drop the connection
            self._fail(exc)
            self.transport.close()

    def on_message_begin(self) -> None:
        self.body_len = 0

    def on_body(self, body: bytes) -> None:
        self.body_len += len(body)

    def on_message_complete(self) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_result(self.parser.get_status_code())
        if not self.parser.should_keep_alive():
            self.lost = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(exc or ConnectionError("closed"))

    def _fail(self, exc: BaseException) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_exception(ConnectionError(str(exc)))


class HttpTransport:
    """POST the same binary-tensor request over a pool of keep-alive connections."""

    name = "http"

    def __init__(self, url: str, model: str, inputs: Mapping[str, np.ndarray], *, api_key: str | None = None,
                 timeout: float = 60.0):
        u = urlsplit(url if "://" in url else f"http://{url}")
        if u.scheme != "http":
            raise UserError(f"--url {url!r}: only http:// is supported by the load generator")
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        body, hlen = encode_http_infer(inputs)
        auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        head = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {hlen}\r\n"
                f"Content-Length: {len(body)}\r\n{auth}\r\n").encode()
        self.request = head + body
        self.timeout = timeout
        self._idle: deque[_HttpConn] = deque()
        self._all: list[_HttpConn] = []

    async def _conn(self) -> _HttpConn:
        while self._idle:
            c = self._idle.pop()
            if not c.lost:
                return c
        loop = asyncio.get_running_loop()
        _, c = await loop.create_connection(_HttpConn, self.host, self.port)
        self._all.append(c)
        return c

    async def send(self) -> str:
        try:
            c = await self._conn()
        except OSError:
            return "connection"
        c.waiter = asyncio.get_running_loop().create_future()
        c.transport.write(self.request)
        try:
            status = await asyncio.wait_for(c.waiter, self.timeout)
        except (ConnectionError, asyncio.TimeoutError):
            c.transport.close()
            return "connection"
        if not c.lost:
            self._idle.append(c)
        return "ok" if status == 200 else str(status)

    async def close(self) -> None:
        for c in self._all:
            if c.transport is not None:
                c.transport.close()


class GrpcTransport:
    """ModelInfer with one pre-serialized request over one grpc.aio channel."""

    name = "grpc"

    def __init__(self, target: str, model: str, inputs: Mapping[str, np.ndarray], *, api_key: str | None = None,
                 timeout: float = 60.0):
        self.grpc = require("grpc", purpose="the gRPC load generator")
        pb = require("xinfer_sdk.server._proto.grpc_service_pb2", purpose="the gRPC load generator", extra="serve")
        req = pb.ModelInferRequest(model_name=model)
        for name, arr in inputs.items():
            dt = kserve_datatype(arr.dtype)
            req.inputs.add(name=name, datatype=dt, shape=arr.shape)
            req.raw_input_contents.append(encode_bytes_elements(arr) if dt == "BYTES" else arr.tobytes())
        self.payload = req.SerializeToString()
        self.target = target.split("://", 1)[-1]
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
        self.timeout = timeout
        self.channel: Any = None
        self.call: Any = None

    async def send(self) -> str:
        if self.channel is None:
            self.channel = self.grpc.aio.insecure_channel(self.target)
            self.call = self.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        try:
            await self.call(self.payload, timeout=self.timeout, metadata=self.metadata)
            return "ok"
        except self.grpc.aio.AioRpcError as exc:
            return exc.code().name

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
