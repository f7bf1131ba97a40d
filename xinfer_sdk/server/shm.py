"""Triton's shared-memory extensions: system (POSIX ``/dev/shm``) and CUDA (``cudaIpcOpenMemHandle``) regions.

A same-host client creates a region, registers it under a name, and then names it in an input's (or a requested
output's) parameters instead of sending the tensor through the socket:

    shared_memory_region     the registered name (system and CUDA regions share one namespace)
    shared_memory_byte_size  bytes of the tensor
    shared_memory_offset     where it starts inside the region (default 0)

System regions are ``mmap``-ed once at registration (the whole object, ``/dev/shm/<key>``); an input is then
``np.frombuffer`` over that mapping: no copy between the client's bytes and the batching core. CUDA regions are
opened with the CUDA runtime of ``cuda-python`` (``pip install 'xinfer-sdk[gpu]'``) and copied to host memory for
the engine (our engines take host arrays).

Every mistake (unknown region, a range outside it, a bad key, a name registered twice) is an ``InvalidInput`` (400 /
INVALID_ARGUMENT) naming the region. Regions are closed on unregister and when the server stops (``close``).

One registry per ``Service`` (``registry(service)``), shared by the HTTP and both gRPC transports, as in Triton.
"""

from __future__ import annotations

import base64
import binascii
import logging
import mmap
import os
import threading
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInput

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"
REGION, BYTE_SIZE, OFFSET = "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"
SYSTEM, CUDA = "system", "cuda"
CUDA_IPC_HANDLE_SIZE = 64


class Region:
    """One registered region. ``view`` (system) is a writable memoryview of exactly the registered bytes."""

    __slots__ = ("name", "kind", "key", "offset", "byte_size", "device_id", "_fd", "_mm", "view", "_ptr", "_cuda")

    def __init__(self, name: str, kind: str, key: str, offset: int, byte_size: int, device_id: int = 0):
        self.name, self.kind, self.key = name, kind, key
        self.offset, self.byte_size, self.device_id = offset, byte_size, device_id
        self._fd = -1
        self._mm: mmap.mmap | None = None
        self.view: memoryview | None = None
        self._ptr: Any = None  # CUDA device pointer
        self._cuda: Any = None  # the cuda runtime module

    @property
    def closed(self) -> bool:
        return self.view is None and self._ptr is None

    def status(self) -> dict[str, Any]:
        if self.kind == SYSTEM:
            return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}
        return {"name": self.name, "device_id": self.device_id, "byte_size": self.byte_size}

    def _check_range(self, offset: int, size: int, what: str) -> None:
        if offset < 0 or size < 0 or offset + size > self.byte_size:
            raise InvalidInput(f"{what}: shared memory region {self.name!r} holds {self.byte_size} bytes; offset "
                               f"{offset} + byte size {size} goes past its end")
        if self.closed:
            raise InvalidInput(f"{what}: shared memory region {self.name!r} was unregistered while the request was "
                               "in flight")
        # a client that shrank the object after registering would make the mapping fault (SIGBUS) on access
        if self.kind == SYSTEM and self._fd >= 0 and os.fstat(self._fd).st_size < self.offset + offset + size:
            raise InvalidInput(f"{what}: the shared memory object {self.key!r} behind region {self.name!r} was "
                                   "truncated after it was registered; register it again")

    def read(self, offset: int, size: int, what: str) -> Any:
        """The bytes of a tensor: a memoryview into the mapping (system), or a host copy (CUDA)."""
        self._check_range(offset, size, what)
        if self.kind == SYSTEM:
            return self.view[offset:offset + size]
        out = bytearray(size)
        if size:
            _cuda_copy(self._cuda, _host_ptr(out), int(self._ptr) + offset, size, to_host=True)
        return memoryview(out)

    def write(self, offset: int, size: int, data: Any, what: str) -> None:
        """Write ``data`` (bytes-like, at most ``size`` bytes) at ``offset``."""
        n = memoryview(data).nbytes
        if n > size:
            raise InvalidInput(f"{what}: the output is {n} bytes but shared_memory_byte_size is {size} "
                               f"(region {self.name!r}); ask with a byte size of at least {n}")
        self._check_range(offset, n, what)
        if self.kind == SYSTEM:
            self.view[offset:offset + n] = memoryview(data).cast("B")
        elif n:
            src = bytes(memoryview(data).cast("B"))
            _cuda_copy(self._cuda, int(self._ptr) + offset, _host_ptr(src), n, to_host=False)

    def close(self) -> None:
        if self.view is not None:
            try:
                self.view.release()
            except BufferError:  # pragma: no cover - a slice still exported
                pass
            self.view = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # a request in flight still reads it: the mapping goes when its arrays do
                pass
            self._mm = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._ptr is not None:
            try:
                _check(self._cuda, self._cuda.cudaIpcCloseMemHandle(self._ptr), "cudaIpcCloseMemHandle")
            except InvalidInput as exc:
                log.warning("closing CUDA shared memory region %r: %s", self.name, exc)
            self._ptr = None


def shm_path(key: str, name: str) -> str:
    """``/dev/shm/<key>`` for a POSIX shared memory key (``/name`` or ``name``), refusing anything else."""
    if not isinstance(key, str) or not key:
        raise InvalidInput(f"shared memory region {name!r}: 'key' must be the non-empty name of a POSIX shared "
                           "memory object (as given to shm_open, e.g. '/my_region')")
    base = key[1:] if key.startswith("/") else key
    if not base or "/" in base or base in (".", "..") or "\0" in base:
        raise InvalidInput(f"shared memory region {name!r}: key {key!r} is not a POSIX shared memory name (one "
                           "path component, e.g. '/my_region')")
    return os.path.join(SHM_DIR, base)


def _check(cudart: Any, result: Any, call: str) -> Any:
    """cuda-python calls return (error, values...): raise on an error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise InvalidInput(f"{call} failed: {getattr(err, 'name', err)}")
    return values[0] if len(values) == 1 else (values or None)


def _host_ptr(buf: Any) -> int:
    import ctypes

    if isinstance(buf, bytes):
        return ctypes.cast(ctypes.c_char_p(buf), ctypes.c_void_p).value or 0
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


def _cuda_copy(cudart: Any, dst: int, src: int, n: int, *, to_host: bool) -> None:
    """A synchronous copy between host memory and an opened IPC allocation. cudaMemcpyDefault lets unified virtual
    addressing find each side's device, so regions on several devices work whatever the thread's current device."""
    _check(cudart, cudart.cudaMemcpy(dst, src, n, cudart.cudaMemcpyKind.cudaMemcpyDefault),
           "cudaMemcpy (device to host)" if to_host else "cudaMemcpy (host to device)")


def _cuda_runtime() -> Any:
    """The CUDA runtime bindings of cuda-python (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
        except ImportError:
            raise InvalidInput("CUDA shared memory needs the CUDA runtime of cuda-python, which this server does "
                               "not have; install it with: pip install 'xinfer-sdk[gpu]' (or use system shared "
                               "memory)") from None
    return cudart


class SharedMemory:
    """The registered regions of one server (HTTP and gRPC share it). Thread-safe: grpcio may call from its loop."""

    def __init__(self) -> None:
        self.regions: dict[str, Region] = {}
        self._lock = threading.Lock()

    # -- register / status / unregister -------------------------------------------------------------------
    def register_system(self, name: str, key: Any, offset: Any, byte_size: Any) -> None:
        self._check_name(name)
        offset = _count(offset, "offset", name)
        byte_size = _count(byte_size, "byte_size", name)
        path = shm_path(key, name)
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise InvalidInput(f"shared memory region {name!r}: cannot open key {key!r} ({path}: "
                               f"{exc.strerror}); create it first (shm_open / "
                               "tritonclient.utils.shared_memory.create_shared_memory_region)") from None
        try:
            size = os.fstat(fd).st_size
            if offset + byte_size > size:
                raise InvalidInput(f"shared memory region {name!r}: offset {offset} + byte_size {byte_size} is past "
                                   f"the end of {key!r}, which holds {size} bytes")
            region = Region(name, SYSTEM, key, offset, byte_size)
            if byte_size:
                region._mm = mmap.mmap(fd, offset + byte_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                region.view = memoryview(region._mm)[offset:offset + byte_size]
            else:
                region.view = memoryview(bytearray(0))
            region._fd = fd
        except BaseException:
            os.close(fd)
            raise
        self._add(region)

    def register_cuda(self, name: str, raw_handle: Any, device_id: Any, byte_size: Any) -> None:
        """Open a client's ``cudaIpcMemHandle_t`` (64 raw bytes; HTTP sends them base64 in ``raw_handle.b64``)."""
        import ctypes

        self._check_name(name)
        byte_size = _count(byte_size, "byte_size", name)
        device_id = _count(device_id, "device_id", name)
        if isinstance(raw_handle, str):
            try:
                raw_handle = base64.b64decode(raw_handle, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput(f"CUDA shared memory region {name!r}: raw_handle.b64 is not base64") from None
        if not isinstance(raw_handle, (bytes, bytearray)) or len(raw_handle) != CUDA_IPC_HANDLE_SIZE:
            raise InvalidInput(f"CUDA shared memory region {name!r}: raw_handle must be the {CUDA_IPC_HANDLE_SIZE} "
                               "bytes of a cudaIpcMemHandle_t (cudaIpcGetMemHandle)")
        cudart = _cuda_runtime()
        try:
            handle = cudart.cudaIpcMemHandle_t()
            ctypes.memmove(handle.getPtr(), bytes(raw_handle), CUDA_IPC_HANDLE_SIZE)
            _check(cudart, cudart.cudaSetDevice(device_id), f"cudaSetDevice({device_id})")
            flags = getattr(cudart, "cudaIpcMemLazyEnablePeerAccess", 1)  # cudaIpcMemLazyEnablePeerAccess = 0x01
            ptr = _check(cudart, cudart.cudaIpcOpenMemHandle(handle, flags),
                         f"cudaIpcOpenMemHandle (region {name!r})")
        except InvalidInput:
            raise
        except Exception as exc:  # the CUDA runtime refused in a way cuda-python reports by raising
            raise InvalidInput(f"CUDA shared memory region {name!r}: cannot open its IPC handle on device "
                               f"{device_id} ({exc})") from exc
        region = Region(name, CUDA, "", 0, byte_size, device_id)
        region._ptr, region._cuda = ptr, cudart
        try:
            self._add(region)
        except BaseException:
            region.close()
            raise

    def status(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if name:
                region = self.regions.get(name)
                if region is None or region.kind != kind:
                    raise InvalidInput(f"no {kind} shared memory region named {name!r} is registered")
                return [region.status()]
            return [r.status() for r in self.regions.values() if r.kind == kind]

    def unregister(self, kind: str, name: str | None = None) -> None:
        """One region (by name; an unknown name is not an error, as in Triton) or every region of ``kind``."""
        with self._lock:
            if name:
                gone = [self.regions.pop(name)] if name in self.regions and self.regions[name].kind == kind else []
            else:
                gone = [r for r in self.regions.values() if r.kind == kind]
                for r in gone:
                    del self.regions[r.name]
        for r in gone:
            r.close()

    def close(self) -> None:
        """Unregister everything (server shutdown)."""
        with self._lock:
            gone, self.regions = list(self.regions.values()), {}
        for r in gone:
            r.close()

    # -- tensors ------------------------------------------------------------------------------------------
    def get(self, name: Any, what: str) -> Region:
        region = self.regions.get(name) if isinstance(name, str) else None
        if region is None:
            known = ", ".join(map(repr, self.regions)) or "none"
            raise InvalidInput(f"{what}: shared memory region {name!r} is not registered (registered: {known}); "
                               "register it first")
        return region

    def _check_name(self, name: Any) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidInput("a shared memory region needs a non-empty name")
        if name in self.regions:
            raise InvalidInput(f"shared memory region {name!r} is already registered; unregister it first or pick "
                               "another name")

    def _add(self, region: Region) -> None:
        with self._lock:
            if region.name in self.regions:
                region.close()
                raise InvalidInput(f"shared memory region {region.name!r} is already registered")
            self.regions[region.name] = region


def _count(value: Any, field: str, name: str) -> int:
    if type(value) is not int or value < 0:
        raise InvalidInput(f"shared memory region {name!r}: {field!r} must be a non-negative integer, got {value!r}")
    return value


class ShmRef:
    """Where a tensor lives: (region, offset, byte size), parsed from a tensor's parameters."""

    __slots__ = ("region", "offset", "size")

    def __init__(self, region: Region, offset: int, size: int):
        self.region, self.offset, self.size = region, offset, size


def tensor_ref(shm: SharedMemory | None, params: Mapping[str, Any], what: str) -> ShmRef | None:
    """The shared-memory parameters of one input or requested output (None when it has none)."""
    if REGION not in params and BYTE_SIZE not in params:
        return None
    if REGION not in params or BYTE_SIZE not in params:
        raise InvalidInput(f"{what}: shared memory needs both '{REGION}' and '{BYTE_SIZE}'")
    if shm is None:
        raise InvalidInput(f"{what}: this endpoint does not take shared memory")
    region = shm.get(params[REGION], what)
    size, offset = params[BYTE_SIZE], params.get(OFFSET, 0)
    if type(size) is not int or size < 0:
        raise InvalidInput(f"{what}: '{BYTE_SIZE}' must be a non-negative integer, got {size!r}")
    if type(offset) is not int or offset < 0:
        raise InvalidInput(f"{what}: '{OFFSET}' must be a non-negative integer, got {offset!r}")
    region._check_range(offset, size, what)
    return ShmRef(region, offset, size)


def registry(service: Any) -> SharedMemory:
    """The registry of a ``Service`` (made on first use; ``close_registry`` closes it when the server stops)."""
    shm = getattr(service, "shared_memory", None)
    if shm is None:
        shm = SharedMemory()
        service.shared_memory = shm
    return shm


def close_registry(service: Any) -> None:
    shm = getattr(service, "shared_memory", None)
    if shm is not None:
        shm.close()


__all__ = ["SharedMemory", "Region", "ShmRef", "registry", "close_registry", "tensor_ref", "shm_path"]
