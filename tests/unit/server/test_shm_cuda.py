"""CUDA shared memory without a GPU: the server's CUDA path (open the IPC handle on the right device, copy inputs out
at their offset, copy outputs back, close on unregister) against a recording stand-in for ``cuda.bindings.runtime``
whose "device memory" is host memory. The real runtime is exercised by the gpu-marked test in test_shm.py."""

from __future__ import annotations

import base64
import ctypes
import enum
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from server_doubles import make_model

from xinfer_sdk.server import shm as shm_mod


class _Err(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1


class FakeCudart:
    """The calls shm.py makes, with the documented (error, value) return shape of cuda-python."""

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyDefault = 4

    cudaIpcMemLazyEnablePeerAccess = 1

    class cudaIpcMemHandle_t:
        def __init__(self):
            self._buf = ctypes.create_string_buffer(64)

        def getPtr(self):
            return ctypes.addressof(self._buf)

    def __init__(self):
        self.calls = []
        self.allocations = {}  # handle bytes -> ctypes buffer standing in for device memory

    def allocate(self, nbytes, tag):
        buf = ctypes.create_string_buffer(nbytes)
        handle = tag.ljust(64, b"\0")
        self.allocations[handle] = buf
        return handle, buf

    def cudaSetDevice(self, device):
        self.calls.append(("cudaSetDevice", device))
        return (_Err.cudaSuccess if device == 0 else _Err.cudaErrorInvalidValue,)

    def cudaIpcOpenMemHandle(self, handle, flags):
        raw = ctypes.string_at(handle.getPtr(), 64)
        self.calls.append(("cudaIpcOpenMemHandle", raw.rstrip(b"\0"), flags))
        buf = self.allocations.get(raw)
        if buf is None:
            return _Err.cudaErrorInvalidValue, 0
        return _Err.cudaSuccess, ctypes.addressof(buf)

    def cudaMemcpy(self, dst, src, n, kind):
        self.calls.append(("cudaMemcpy", n, kind))
        ctypes.memmove(dst, src, n)
        return (_Err.cudaSuccess,)

    def cudaIpcCloseMemHandle(self, ptr):
        self.calls.append(("cudaIpcCloseMemHandle", ptr))
        return (_Err.cudaSuccess,)


@pytest.fixture
def cudart(monkeypatch):
    fake = FakeCudart()
    monkeypatch.setattr(shm_mod, "_cuda_runtime", lambda: fake)
    return fake


@pytest.fixture(scope="module")
def srv():
    from xinfer_sdk.server.runner import Server

    s = Server([make_model()], port=0, grpc_port=None, gpu_metrics=False, drain_timeout=5).start_background()
    yield s
    s.stop()


def _post(srv, path, doc):
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}{path}", json.dumps(doc).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _register(srv, name, handle, nbytes, device=0):
    return _post(srv, f"/v2/cudasharedmemory/region/{name}/register",
                 {"raw_handle": {"b64": base64.b64encode(handle).decode()}, "device_id": device, "byte_size": nbytes})


def test_inputs_and_outputs_go_through_the_ipc_allocation(srv, cudart):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    h_in, dev_in = cudart.allocate(64, b"in")
    h_out, dev_out = cudart.allocate(64, b"out")
    ctypes.memmove(ctypes.addressof(dev_in) + 16, x.tobytes(), x.nbytes)
    assert _register(srv, "cin", h_in, 64)[0] == 200
    assert _register(srv, "cout", h_out, 64)[0] == 200
    status, body = _post(srv, "/v2/models/dbl/infer", {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "parameters": {
            "shared_memory_region": "cin", "shared_memory_byte_size": 32, "shared_memory_offset": 16}}],
        "outputs": [{"name": "y", "parameters": {"shared_memory_region": "cout", "shared_memory_byte_size": 32,
                                                 "shared_memory_offset": 8}}]})
    assert status == 200, body
    got = np.frombuffer(ctypes.string_at(ctypes.addressof(dev_out) + 8, 32), np.float32).reshape(2, 4)
    np.testing.assert_array_equal(got, x * 2)
    assert ("cudaSetDevice", 0) in cudart.calls and ("cudaIpcOpenMemHandle", b"in", 1) in cudart.calls
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/v2/cudasharedmemory/status", timeout=10) as r:
        assert {(d["name"], d["device_id"], d["byte_size"]) for d in json.loads(r.read())} == {
            ("cin", 0, 64), ("cout", 0, 64)}
    assert _post(srv, "/v2/cudasharedmemory/unregister", {})[0] == 200
    assert sum(c[0] == "cudaIpcCloseMemHandle" for c in cudart.calls) == 2


def test_a_handle_the_runtime_refuses_is_400_naming_the_region(srv, cudart):
    status, body = _register(srv, "stale", b"never-allocated", 64)
    assert status == 400 and "'stale'" in json.loads(body)["error"]


def test_a_device_the_runtime_refuses_is_400(srv, cudart):
    handle, _ = cudart.allocate(16, b"d1")
    status, body = _register(srv, "d1", handle, 16, device=1)
    assert status == 400 and "cudaSetDevice(1)" in json.loads(body)["error"]


def test_a_raw_handle_of_the_wrong_size_is_400(srv, cudart):
    status, body = _post(srv, "/v2/cudasharedmemory/region/bad/register",
                         {"raw_handle": {"b64": base64.b64encode(b"short").decode()}, "device_id": 0, "byte_size": 8})
    assert status == 400 and "64" in json.loads(body)["error"]
