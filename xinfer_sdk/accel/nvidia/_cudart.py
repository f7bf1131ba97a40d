"""The CUDA runtime through cuda-python (NVIDIA's maintained binding), imported on first use.

``cuda.bindings.runtime`` (the layout since cuda-python 12.6.1) or ``cuda.cudart`` (12.6.0 and older; removed in
13.0). Every call returns a tuple whose first item is a ``cudaError_t``; ``check`` turns a failure into an
``XinferError`` naming the call. pycuda is not used: it does not even build without a driver.

cuda-bindings links the CUDA runtime of its own major statically, so cuda-python 13.x needs a driver for CUDA 13
(R580+) and 12.x one for CUDA 12 (R525+; we document R535+). With an older driver ``cudaGetDeviceCount`` answers
``cudaErrorInsufficientDriver`` and ``device_status`` says so instead of "no device".
"""

from __future__ import annotations

import ctypes
import importlib.metadata as md
from types import ModuleType
from typing import Any

import numpy as np

from ...errors import MissingDependency, XinferError
from .engine_plan import grow_bytes


class CudaError(XinferError):
    """A CUDA runtime call failed (driver, out of memory, invalid device...)."""


def load() -> ModuleType:
    """The cuda-python runtime module, or MissingDependency naming the extra."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6.1
    except ImportError:
        try:
            from cuda import cudart  # cuda-python <= 12.6.0 layout
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


def error_name(err: Any) -> str:
    """'cudaErrorInsufficientDriver' for a cudaError_t (its enum name), else its text."""
    return getattr(err, "name", None) or str(err)


def _version(cudart: ModuleType, fn: str) -> int | None:
    """cudaDriverGetVersion / cudaRuntimeGetVersion as 1000*major + 10*minor; None when not answered."""
    try:
        res = getattr(cudart, fn)()
    except Exception:
        return None
    if int(res[0]) != 0 or res[1] is None:
        return None
    return int(res[1])


def cuda_version_text(v: int | None) -> str:
    """12020 -> '12.2' (CUDA's version encoding); None/0 -> 'none'."""
    return f"{v // 1000}.{v % 1000 // 10}" if v else "none"


def bindings_version() -> str | None:
    """The installed cuda-bindings (or, before 12.8, cuda-python) version."""
    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return None


def explain_no_device(err_name: str, driver_cuda: int | None, runtime_cuda: int | None,
                      bindings: str | None = None) -> str:
    """Why cudaGetDeviceCount found no device, in one line naming the cudaError_t and the fix (pure function)."""
    major = runtime_cuda // 1000 if runtime_cuda else (int(bindings.split(".")[0]) if bindings else None)
    pkg = f"cuda-python {bindings}" if bindings else f"cuda-python {major}.x" if major else "cuda-python"
    if err_name == "cudaErrorInsufficientDriver":
        if not driver_cuda:
            return f"no NVIDIA driver is loaded ({err_name}); install the NVIDIA driver, or run on the CPU"
        if major and driver_cuda // 1000 < major:
            return (f"driver too old for {pkg} (needs CUDA {major}.x, the driver supports CUDA "
                    f"{cuda_version_text(driver_cuda)}) ({err_name}); "
                    + ("pip install 'cuda-python>=12.6.1,<13' (the [tensorrt]/[gpu] extras pin it) or upgrade the "
                       "driver to R580+" if major >= 13 else "upgrade the NVIDIA driver"))
        return (f"the driver (CUDA {cuda_version_text(driver_cuda)}) is older than the CUDA runtime "
                f"{cuda_version_text(runtime_cuda)} of {pkg} ({err_name}); upgrade the NVIDIA driver")
    if err_name == "cudaErrorNoDevice":
        return f"no CUDA device is visible ({err_name}): no GPU, or CUDA_VISIBLE_DEVICES hides them"
    if err_name == "cudaSuccess":
        return "no CUDA device is visible (0 devices): CUDA_VISIBLE_DEVICES hides them, or no GPU"
    return f"CUDA reports no usable device ({err_name})"


def device_status(cudart: ModuleType) -> tuple[int, str | None]:
    """(visible devices, None) or (0, why not: the cudaError_t name and what to do). Never raises."""
    try:
        res = cudart.cudaGetDeviceCount()
    except Exception as exc:  # a binding that cannot even reach libcuda
        return 0, f"cudaGetDeviceCount failed: {type(exc).__name__}: {exc}"
    err, count = res[0], res[1]
    if int(err) == 0 and count:
        return int(count), None
    return 0, explain_no_device(error_name(err), _version(cudart, "cudaDriverGetVersion"),
                                _version(cudart, "cudaRuntimeGetVersion"), bindings_version())


def device_count(cudart: ModuleType) -> int:
    """Visible CUDA devices; 0 when there is no driver or no device (never raises; ``device_status`` says why)."""
    return device_status(cudart)[0]


def versions(cudart: ModuleType) -> dict[str, int | None]:
    """{'driver': CUDA version the driver supports, 'runtime': CUDA runtime cuda-python runs} (12020 = 12.2)."""
    return {"driver": _version(cudart, "cudaDriverGetVersion"), "runtime": _version(cudart, "cudaRuntimeGetVersion")}


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
    """The address behind a cuda-python handle (cudaStream_t...) as the int TensorRT's Python API takes.

    ``cuda.bindings.utils.get_cuda_native_handle`` where it exists (cuda-bindings 12.8+/13.x: ``int(obj)`` is
    deprecated there), else ``int(obj)``. Never ``getPtr()``: that is the address of the Python wrapper's
    storage, not the stream.
    """
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(obj)
    try:
        return int(get_cuda_native_handle(obj))
    except TypeError:  # a plain int (the default stream 0)
        return int(obj)


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
