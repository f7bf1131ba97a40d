"""Triton's model-repository and shared-memory extensions: the HTTP endpoints, and what gRPC shares with them.

    POST /v2/repository/index                                  body {"ready": bool} (optional)
    POST /v2/repository/models/<m>/load                        body {"parameters": {...}} (optional)
    POST /v2/repository/models/<m>/unload                      body {"parameters": {...}} (optional)
    GET  /v2/systemsharedmemory[/region/<r>]/status
    POST /v2/systemsharedmemory/region/<r>/register            body {"key": str, "offset": int, "byte_size": int}
    POST /v2/systemsharedmemory[/region/<r>]/unregister
    GET  /v2/cudasharedmemory[/region/<r>]/status
    POST /v2/cudasharedmemory/region/<r>/register              body {"raw_handle": {"b64": str}, "device_id": int,
                                                                     "byte_size": int}
    POST /v2/cudasharedmemory[/region/<r>]/unregister

Loading a model can take seconds (engine build, warm-up): load and unload run off the event loop (in the loop's
default executor when ``Service.load_model`` is a plain function) and are answered when done; inference on other
models goes on meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from ..errors import InvalidInput, ModelNotFound, XinferError
from .http_wire import Request, error_response, response
from .shm import CUDA, SYSTEM, SharedMemory

log = logging.getLogger(__name__)

# what the server adds to Service.server_metadata()'s extensions
EXTENSIONS = ("model_repository", "model_repository(unload_dependents)", "system_shared_memory", "cuda_shared_memory")
_SHM_PREFIX = {"/v2/systemsharedmemory": SYSTEM, "/v2/cudasharedmemory": CUDA}


def with_extensions(doc: dict[str, Any]) -> dict[str, Any]:
    """Server metadata with the extensions served here."""
    have = list(doc.get("extensions", []))
    return {**doc, "extensions": have + [e for e in EXTENSIONS if e not in have]}


def repository_index(service: Any, ready_only: bool) -> list[dict[str, Any]]:
    try:
        return service.repository_index(ready_only=ready_only)
    except TypeError:  # a Service without the ready filter
        index = service.repository_index()
        return [m for m in index if m.get("state") == "READY"] if ready_only else index


async def model_control(service: Any, action: str, name: str, params: Mapping[str, Any]) -> None:
    """``Service.load_model`` / ``unload_model`` off the event loop."""
    if not name:
        raise InvalidInput(f"{action}: the model name is empty")
    fn = getattr(service, f"{action}_model", None)
    if fn is None:
        raise _NotImplemented(f"this server cannot {action} models (its Service has no {action}_model); serve a "
                              "model repository directory with --model-control explicit")
    if asyncio.iscoroutinefunction(fn):
        await fn(name, dict(params))
    else:
        await asyncio.get_running_loop().run_in_executor(None, fn, name, dict(params))


class _NotImplemented(XinferError):
    http_status = 501


def _body(req: Request) -> dict[str, Any]:
    if not req.body or not req.body.strip():
        return {}
    try:
        doc = json.loads(req.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{req.path}: the request body is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"{req.path}: the request body must be a JSON object")
    return doc


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


class ControlRoutes:
    """The HTTP side of the repository and shared-memory extensions (called by ``Router`` after the API key)."""

    def __init__(self, service: Any, shm: SharedMemory):
        self.service = service
        self.shm = shm

    def dispatch(self, conn: Any, req: Request, path: str, close: bool) -> None:
        if path.startswith("/v2/repository/"):
            self._repository(conn, req, path, close)
            return
        for prefix, kind in _SHM_PREFIX.items():
            if path == prefix or path.startswith(prefix + "/"):
                body = self._shared_memory(req, kind, path[len(prefix):])
                conn._answer(response(200, body, close=close), close)
                return
        raise ModelNotFound(f"no such endpoint: {req.method.decode()} {req.path}")

    @staticmethod
    def _post(req: Request) -> None:
        if req.method != b"POST":
            raise _MethodNotAllowed(f"use POST for {req.path} (got {req.method.decode()})")

    # -- model repository ---------------------------------------------------------------------------------
    def _repository(self, conn: Any, req: Request, path: str, close: bool) -> None:
        self._post(req)
        if path == "/v2/repository/index":
            ready = _body(req).get("ready", False)
            if not isinstance(ready, bool):
                raise InvalidInput(f"/v2/repository/index: 'ready' must be true or false, got {ready!r}")
            conn._answer(response(200, _dumps(repository_index(self.service, ready)), close=close), close)
            return
        parts = path[len("/v2/repository/"):].split("/")
        if len(parts) != 3 or parts[0] != "models" or parts[2] not in ("load", "unload"):
            raise ModelNotFound(f"no such endpoint: POST {req.path} (use /v2/repository/models/<name>/load or "
                                "/unload)")
        name, action = unquote(parts[1]), parts[2]
        params = _body(req).get("parameters", {})
        if not isinstance(params, dict):
            raise InvalidInput(f"{req.path}: 'parameters' must be a JSON object")
        slot = conn.begin()
        task = asyncio.ensure_future(model_control(self.service, action, name, params))
        task.add_done_callback(lambda t: self._controlled(conn, slot, t, close, f"{action} {name!r}"))

    def _controlled(self, conn: Any, slot: Any, task: asyncio.Future, close: bool, what: str) -> None:
        if task.cancelled():
            data = error_response(503, f"{what} was cancelled (the server is stopping)", close=close)
        elif task.exception() is None:
            data = response(200, b"", close=close)
        else:
            exc = task.exception()
            if isinstance(exc, XinferError):
                data = error_response(exc.http_status, str(exc), close=close)
            else:
                log.error("repository: %s failed", what, exc_info=exc)
                data = error_response(500, f"{what} failed (see the server log)", close=close)
        if not conn.closed:
            conn.finish(slot, data, close)

    # -- shared memory ------------------------------------------------------------------------------------
    def _shared_memory(self, req: Request, kind: str, rest: str) -> bytes:
        """``rest``: what follows /v2/<kind>sharedmemory: /status, /unregister, /region/<r>/<action>."""
        parts = rest.strip("/").split("/")
        name = None
        if len(parts) == 3 and parts[0] == "region":
            name, action = unquote(parts[1]), parts[2]
        elif len(parts) == 1:
            action = parts[0]
        else:
            action = ""
        if action == "status":
            if req.method != b"GET" and req.method != b"POST":
                raise _MethodNotAllowed(f"use GET for {req.path} (got {req.method.decode()})")
            return _dumps(self.shm.status(kind, name))
        if action == "register" and name is not None:
            self._post(req)
            doc = _body(req)
            if kind == SYSTEM:
                self.shm.register_system(name, doc.get("key"), doc.get("offset", 0), doc.get("byte_size"))
            else:
                raw = doc.get("raw_handle")
                b64 = raw.get("b64") if isinstance(raw, dict) else None
                if not isinstance(b64, str):
                    raise InvalidInput(f"CUDA shared memory region {name!r}: 'raw_handle' must be "
                                       '{"b64": "<base64 of the cudaIpcMemHandle_t>"}')
                self.shm.register_cuda(name, b64, doc.get("device_id", 0), doc.get("byte_size"))
            return b""
        if action == "unregister":
            self._post(req)
            self.shm.unregister(kind, name)
            return b""
        raise ModelNotFound(f"no such endpoint: {req.method.decode()} {req.path}")


class _MethodNotAllowed(XinferError):
    http_status = 405


__all__ = ["ControlRoutes", "EXTENSIONS", "model_control", "repository_index", "with_extensions"]
