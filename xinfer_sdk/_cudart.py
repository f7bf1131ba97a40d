"""The CUDA runtime through cuda-python (NVIDIA's maintained binding), imported on first use.

``cuda.bindings.runtime`` (cuda-python >= 12.6) or ``cuda.cudart`` (older). Every call returns a tuple whose
first item is a ``cudaError_t``; ``check`` turns a failure into an ``XinferError`` naming the call. pycuda is
not used: it does not even build without a driver.
"""

from __future__ import annotations

import ctypes
from types import ModuleType
from typing import Any

import numpy as np

from .engine_plan import grow_bytes
from .errors import MissingDependency, XinferError


class CudaError(XinferError):
    """A CUDA runtime call failed (driver, out of memory, invalid device...)."""


def load() -> ModuleType:
    """The cuda-python runtime module, or MissingDependency naming the extra."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6 layout
        except ImportError as exc:
            raise MissingDependency("cuda-python", "tensorrt", purpose="CUDA buffers and streams",
                                    cause=str(exc)) from None
    return cudart


def check(result: Any, what: str) -> Any:
    """Unpack ``(err, value...)``; raise CudaError unless err is cudaSuccess (0)."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != 0:
        name = getattr(err, "name", None) or str(err)
        raise CudaError(f"CUDA {what} failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def device_count(cudart: ModuleType) -> int:
    """Visible CUDA devices; 0 when there is no driver or no device (never raises)."""
    try:
        res = cudart.cudaGetDeviceCount()
    except Exception:
        return 0
    err, count = res[0], res[1]
    return int(count) if int(err) == 0 else 0


def set_device(cudart: ModuleType, device: int) -> None:
    check(cudart.cudaSetDevice(int(device)), f"cudaSetDevice({device})")


def device_properties(cudart: ModuleType, device: int) -> dict[str, Any]:
    """Name, compute capability ('8.6') and memory of one device."""
    prop = check(cudart.cudaGetDeviceProperties(int(device)), f"cudaGetDeviceProperties({device})")
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
    return {"name": str(name).strip(), "compute_capability": f"{int(prop.major)}.{int(prop.minor)}",
            "total_memory": int(getattr(prop, "totalGlobalMem", 0) or 0)}


def host_view(ptr: int, nbytes: int) -> np.ndarray:
    """A uint8 numpy view over ``nbytes`` of host memory at ``ptr`` (pinned buffers)."""
    if nbytes == 0:
        return np.empty(0, dtype=np.uint8)
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), shape=(nbytes,))


def handle(obj: Any) -> int:
    """The address behind a cuda-python handle (cudaStream_t...) as the int TensorRT's Python API takes."""
    try:
        return int(obj)
    except TypeError:
        return int(obj.getPtr())


class DeviceBuffer:
    """Device memory that grows (cudaMalloc) when a larger batch comes, and is reused otherwise."""

    def __init__(self, cudart: ModuleType):
        self.cudart = cudart
        self.ptr = 0
        self.nbytes = 0

    def ensure(self, nbytes: int) -> int:
        size = grow_bytes(max(int(nbytes), 1), self.nbytes)
        if size != self.nbytes or not self.ptr:
            self.free()
            self.ptr = int(check(self.cudart.cudaMalloc(size), f"cudaMalloc({size})"))
            self.nbytes = size
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr, self.nbytes = self.ptr, 0, 0
            check(self.cudart.cudaFree(ptr), "cudaFree")


class PinnedBuffer:
    """Page-locked host memory (cudaMallocHost) so host<->device copies are truly asynchronous DMA."""

    def __init__(self, cudart: ModuleType):
        self.cudart = cudart
        self.ptr = 0
        self.nbytes = 0
        self.view = np.empty(0, dtype=np.uint8)

    def ensure(self, nbytes: int) -> np.ndarray:
        size = grow_bytes(max(int(nbytes), 1), self.nbytes)
        if size != self.nbytes or not self.ptr:
            self.free()
            self.ptr = int(check(self.cudart.cudaMallocHost(size), f"cudaMallocHost({size})"))
            self.nbytes = size
            self.view = host_view(self.ptr, size)
        return self.view

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr, self.nbytes = self.ptr, 0, 0
            self.view = np.empty(0, dtype=np.uint8)
            check(self.cudart.cudaFreeHost(ptr), "cudaFreeHost")


class Stream:
    """One CUDA stream (one per execution context) with async copies and a synchronize."""

    def __init__(self, cudart: ModuleType):
        self.cudart = cudart
        self.stream = check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.handle = handle(self.stream)  # what TensorRT's execute_async_v3(stream_handle) takes

    def htod(self, dst: int, src: int, nbytes: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(self.cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self.stream), "cudaMemcpyAsync(H2D)")

    def dtoh(self, dst: int, src: int, nbytes: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(self.cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self.stream), "cudaMemcpyAsync(D2H)")

    def synchronize(self) -> None:
        check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def destroy(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            check(self.cudart.cudaStreamDestroy(stream), "cudaStreamDestroy")
