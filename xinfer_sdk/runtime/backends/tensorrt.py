"""TensorRT backend: a plan that matches this GPU and TensorRT, or one built here from the bundle's recipe.

On activate it looks for an engine whose key (compute capability, TensorRT version, precision, plan hash)
fits this GPU: first among the bundle's ``engine`` artifacts, then in the user cache. A stale or foreign plan
(TensorRT refuses it, or its checksum changed) is skipped with a warning; when none loads, the engine is
built from ``model.onnx`` with the manifest's ``engine_plan`` (a log line says so and how long it took) and
cached in the bundle's ``engines/`` (registered in the manifest) or, for a read-only bundle, in
``~/.cache/xinfer-sdk/engines/<model sha256>/``.

One engine per (bundle, device, plan) is shared by every worker; each backend instance (one per worker of
the batching core) owns ONE execution context, one CUDA stream and its own device/pinned buffers, grown
when a larger batch comes. CUDA goes through cuda-python; TensorRT and cuda-python are imported on first use.

A CUDA call that fails with a sticky error while a batch runs (cudaErrorIllegalAddress, cudaErrorAssert,
cudaErrorLaunchFailure, ...; ``EngineFatal.MARKERS``) is raised as ``EngineFatal``: the context is unusable, so
the batching core replaces this worker (new context, stream and buffers) instead of feeding it more batches.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...accel.nvidia import _cudart
from ...accel.nvidia.engine_plan import (
    EngineKey,
    check_feed_shapes,
    make_build_plan,
    matching_engines,
    normalize_trt_version,
    parse_device,
    user_engine_dir,
)
from ...bundle import Bundle, sha256_file
from ...errors import BackendUnavailable, EngineFatal, InvalidInput, UserError, XinferError
from ...profiles import Profile
from .. import trace
from .base import Backend

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Engine:
    """A deserialized engine shared by the workers of one bundle on one device."""

    engine: Any
    runtime: Any
    key: EngineKey
    path: Path
    source: str  # bundle | user-cache | built
    build_seconds: float | None
    inputs: list[tuple[str, np.dtype]]
    outputs: list[tuple[str, np.dtype]]
    ranges: dict[str, dict[str, list[int]]]
    compute_capability: str
    tensorrt_version: str
    refs: int = 0


def _plan(bundle: Bundle, profile: Profile) -> dict[str, Any]:
    """The manifest's recorded plan; for bundles made without one, a plan from the profile (may need --shapes).

    A raw ``.onnx`` is "as-is": its plan takes the graph's own precision (fp32, fp16/bf16 weights, int8/fp8
    for Q/DQ) and the batch maximum that ``load()`` set from the requested batch policy.
    """
    plan = bundle.manifest.engine_plan
    if plan:
        return dict(plan)
    mf = bundle.manifest
    precision = mf.precision
    if precision == "as-is":
        from ..onnx_precision import graph_precision

        precision = graph_precision(bundle.model_file)
    prefs = (mf.batch or {}).get("preferred_batch_sizes")
    # the deployable graph's own element type: what a strongly typed TensorRT 11 builds from
    graph = precision if precision in ("fp16", "bf16", "int8", "fp8") else "fp32"
    return make_build_plan(profile=profile, precision=precision, inputs=mf.inputs,
                           max_batch_size=mf.max_batch_size, preferred_batch_sizes=prefs, graph=graph)


def _io(trt: Any, engine: Any) -> tuple[list[tuple[str, np.dtype]], list[tuple[str, np.dtype]]]:
    inputs, outputs = [], []
    for i in range(int(engine.num_io_tensors)):
        name = engine.get_tensor_name(i)
        dt = engine.get_tensor_dtype(name)
        try:
            dtype = np.dtype(trt.nptype(dt))
        except (TypeError, KeyError):
            raise BackendUnavailable("tensorrt", f"engine tensor {name!r} has type {dt} with no numpy equivalent; "
                                     "use the onnxruntime backend", extra="tensorrt") from None
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append((name, dtype))
    return inputs, outputs


class TensorRTBackend(Backend):
    name = "tensorrt"
    extra = "tensorrt"
    #: ``profiling.cuda_events.StageEvents`` while ``xinfer-sdk profile`` times this worker with CUDA events
    _cuda_timer: Any = None
    devices = ("cuda",)

    _engines: ClassVar[dict[tuple[str, int, str], _Engine]] = {}
    # guards _engines, _key_locks and refs only; a load/build holds just its own key's lock (a build of one
    # model, minutes long, must not block the activation of any other model or device)
    _engines_lock: ClassVar[threading.Lock] = threading.Lock()
    _key_locks: ClassVar[dict[tuple[str, int, str], threading.Lock]] = {}

    # -- selection -------------------------------------------------------------------------------------
    @classmethod
    def unavailable_reason(cls, bundle: Bundle, profile: Profile, device: str) -> str | None:
        try:
            index = parse_device(device)
        except UserError:
            return f"TensorRT runs on CUDA devices, not {device!r}"
        from xinfer_sdk.converters.tensorrt_engine import unavailable_reason

        why = unavailable_reason(index)
        if why and why.startswith("no CUDA device"):  # say why: driver too old for cuda-python 13.x, ...
            try:
                why = _cudart.device_status(_cudart.load())[1] or why
            except XinferError:
                pass
        if why:
            return why
        try:
            _plan(bundle, profile)
        except XinferError as exc:
            return f"the bundle has no TensorRT build plan and none can be made: {exc}"
        return None

    # -- the shared engine -----------------------------------------------------------------------------
    @classmethod
    def _acquire(cls, bundle: Bundle, profile: Profile, index: int) -> _Engine:
        plan = _plan(bundle, profile)
        ident = (str(bundle.root.resolve()), index, str(plan.get("hash")))
        with cls._engines_lock:
            key_lock = cls._key_locks.setdefault(ident, threading.Lock())
        with key_lock:  # workers of the same engine wait for its one load/build; others go on
            with cls._engines_lock:
                shared = cls._engines.get(ident)
                if shared is not None:
                    shared.refs += 1
                    return shared
            shared = cls._load_or_build(bundle, plan, index)
            with cls._engines_lock:
                cls._engines[ident] = shared
                shared.refs += 1
                return shared

    @classmethod
    def _release(cls, shared: _Engine) -> None:
        with cls._engines_lock:
            shared.refs -= 1
            if shared.refs <= 0:
                for k, v in list(cls._engines.items()):
                    if v is shared:
                        del cls._engines[k]
                shared.engine = None
                shared.runtime = None

    @classmethod
    def _load_or_build(cls, bundle: Bundle, plan: dict[str, Any], index: int) -> _Engine:
        from xinfer_sdk.converters.tensorrt_engine import build_engine, deserialize, load_tensorrt

        trt = load_tensorrt()
        cudart = _cudart.load()
        _cudart.set_device(cudart, index)
        props = _cudart.device_properties(cudart, index)
        cc, version = props["compute_capability"], normalize_trt_version(trt.__version__)
        dla = plan.get("dla") or {}
        dla_core = int(dla.get("core", 0)) if dla.get("enabled") else None
        tag = f"tensorrt[{bundle.name}]"
        model_sha = next((a.sha256 for a in bundle.manifest.artifacts_by_role("model")), "")
        cache_dir = Path(user_engine_dir(model_sha))

        candidates: list[tuple[Path, str, str | None]] = []  # (path, source, expected sha256)
        by_path = {a.path: a for a in bundle.manifest.artifacts_by_role("engine")}
        for rel in matching_engines(by_path, plan, cc, version):
            candidates.append((bundle.path(rel), "bundle", by_path[rel].sha256))
        if cache_dir.is_dir():
            for p in matching_engines(sorted(str(p) for p in cache_dir.glob("*.plan")), plan, cc, version):
                candidates.append((Path(p), "user-cache", None))

        for path, source, sha in candidates:
            if not path.is_file():
                log.warning("%-28s | engine %s is listed but missing; skipped", tag, path.name)
                continue
            if sha is not None and sha256_file(path) != sha:
                log.warning("%-28s | engine %s changed after it was recorded (checksum mismatch); skipped", tag,
                            path.name)
                continue
            loaded = deserialize(trt, path.read_bytes(), dla_core=dla_core)
            if loaded is None:
                log.warning("%-28s | engine %s is stale or foreign (TensorRT %s refused it); skipped", tag,
                            path.name, version)
                continue
            log.info("%-28s | loaded TensorRT engine %s (%s)", tag, path.name, source)
            return cls._wrap(trt, loaded, path, source, None, plan, cc, version)

        in_bundle = bundle.engines_writable()
        out_dir = bundle.engines_dir if in_bundle else cache_dir
        log.info("%-28s | no TensorRT engine for sm_%s / TensorRT %s in the bundle; building one from %s into %s",
                 tag, cc.replace(".", ""), version, bundle.model_file.name, out_dir)
        result = build_engine(bundle.model_file, plan, out_dir, device=index,
                              log=lambda msg: log.info("%-28s | %s", tag, msg))
        path = Path(result["path"])
        if in_bundle:
            try:
                meta = {k: result[k] for k in ("key", "tensorrt_version", "compute_capability", "precision", "dla",
                                               "layer_precisions") if k in result}
                bundle.add_artifact(path, role="engine", meta=meta)
                if result.get("timing_cache"):
                    bundle.add_artifact(result["timing_cache"], role="timing_cache")
            except (OSError, XinferError) as exc:
                log.warning("%-28s | engine built but not recorded in the manifest: %s", tag, exc)
        loaded = deserialize(trt, path.read_bytes(), dla_core=dla_core)
        if loaded is None:
            raise BackendUnavailable("tensorrt", f"TensorRT built {path.name} but cannot load it back",
                                     extra="tensorrt")
        log.info("%-28s | built TensorRT engine %s in %.1f s", tag, path.name, result["seconds"])
        return cls._wrap(trt, loaded, path, "built", float(result["seconds"]), plan, cc, version)

    @staticmethod
    def _wrap(trt: Any, loaded: tuple[Any, Any], path: Path, source: str, seconds: float | None,
              plan: dict[str, Any], cc: str, version: str) -> _Engine:
        engine, runtime = loaded
        inputs, outputs = _io(trt, engine)
        key = EngineKey.parse(path.name)
        assert key is not None  # candidates and build results are named by EngineKey
        ranges = dict((plan.get("profiles") or [{}])[0])
        return _Engine(engine, runtime, key, path, source, seconds, inputs, outputs, ranges, cc, version)

    # -- lifecycle -------------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        self._index = parse_device(self.device)
        self._shared = self._acquire(self.bundle, self.profile, self._index)
        try:
            self._cudart = _cudart.load()
            _cudart.set_device(self._cudart, self._index)
            self._stream = _cudart.Stream(self._cudart)
            self._context = self._shared.engine.create_execution_context()
            if self._context is None:
                raise BackendUnavailable("tensorrt", "TensorRT could not create an execution context (out of GPU "
                                         "memory?)", extra="tensorrt")
            # profile 0 is the default; select it only when there is a choice (as NVIDIA's common_runtime.py).
            # The binding raises RuntimeError on failure (PY_ASSERT_RUNTIME_ERROR), it never returns False.
            if int(self._shared.engine.num_optimization_profiles) > 1:
                try:
                    self._context.set_optimization_profile_async(0, self._stream.handle)
                except RuntimeError as exc:
                    raise BackendUnavailable("tensorrt", f"TensorRT refused optimization profile 0 ({exc})",
                                             extra="tensorrt") from exc
            self._dev = {n: _cudart.DeviceBuffer(self._cudart) for n, _ in self._shared.inputs + self._shared.outputs}
            self._host = {n: _cudart.PinnedBuffer(self._cudart) for n, _ in self._shared.inputs + self._shared.outputs}
        except BaseException:
            self._free()
            raise

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return self._infer(feeds)
        except _cudart.CudaError as exc:  # "CUDA cudaStreamSynchronize failed: cudaErrorIllegalAddress"
            fatal = EngineFatal.recognise(exc, "tensorrt")
            if fatal is None:
                raise
            raise fatal from exc

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shared, ctx, stream = self._shared, self._context, self._stream
        if self._index:
            _cudart.set_device(self._cudart, self._index)  # the current device is per host thread
        check_feed_shapes({n: np.shape(a) for n, a in feeds.items()}, shared.ranges)
        timer = self._cuda_timer
        if timer is not None:
            timer.mark("start", stream.stream)
        trace.push("xinfer/h2d")  # NVTX: the host side of each stage; nsys shows the device side under it
        try:
            for name, dtype in shared.inputs:
                if name not in feeds:
                    raise InvalidInput(f"missing input {name!r}; the engine takes {[n for n, _ in shared.inputs]}")
                arr = np.asarray(feeds[name], dtype=dtype, order="C")  # keeps rank 0 (ascontiguousarray gives 1-D)
                if not ctx.set_input_shape(name, arr.shape):
                    raise InvalidInput(f"TensorRT refused shape {list(arr.shape)} for input {name!r}")
                n = arr.nbytes
                dptr = self._dev[name].ensure(n)
                if n:
                    host = self._host[name].ensure(n)
                    host[:n] = arr.reshape(-1).view(np.uint8)
                    stream.htod(dptr, self._host[name].ptr, n)
                ctx.set_tensor_address(name, dptr)  # arr was copied into pinned memory above: nothing to keep alive
        finally:
            trace.pop()
        if timer is not None:
            timer.mark("h2d", stream.stream)
        shapes = {}
        for name, dtype in shared.outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise XinferError(f"output {name!r} has a data-dependent shape {list(shape)}, which the TensorRT "
                                  "backend does not support; use backend='onnxruntime'")
            shapes[name] = shape
            ctx.set_tensor_address(name, self._dev[name].ensure(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize))
        trace.push("xinfer/trt-enqueue")
        try:
            if not ctx.execute_async_v3(stream.handle):
                raise XinferError(f"TensorRT execution failed for {shared.key.filename} (see the TensorRT errors "
                                  "logged)")
        finally:
            trace.pop()
        if timer is not None:
            timer.mark("compute", stream.stream)
        trace.push("xinfer/d2h+sync")
        try:
            for name, dtype in shared.outputs:
                n = int(np.prod(shapes[name], dtype=np.int64)) * dtype.itemsize
                if n:
                    self._host[name].ensure(n)
                    stream.dtoh(self._host[name].ptr, self._dev[name].ptr, n)
            if timer is not None:
                timer.mark("d2h", stream.stream)
            stream.synchronize()
        finally:
            trace.pop()
        if timer is not None:
            timer.done()
        out: dict[str, np.ndarray] = {}
        for name, dtype in shared.outputs:
            arr = np.empty(shapes[name], dtype=dtype)
            if arr.nbytes:
                arr.reshape(-1).view(np.uint8)[:] = self._host[name].view[:arr.nbytes]
            out[name] = arr
        return out

    def deactivate_impl(self) -> None:
        self._free()

    def _free(self) -> None:
        for buf in list(getattr(self, "_dev", {}).values()) + list(getattr(self, "_host", {}).values()):
            try:
                buf.free()
            except XinferError as exc:  # freeing must not mask the reason we are shutting down
                log.warning("tensorrt: %s", exc)
        self._dev, self._host = {}, {}
        self._context = None
        stream = getattr(self, "_stream", None)
        if stream is not None:
            try:
                stream.destroy()
            except XinferError as exc:
                log.warning("tensorrt: %s", exc)
            self._stream = None
        shared = getattr(self, "_shared", None)
        if shared is not None:
            self._shared = None
            self._release(shared)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        shared = getattr(self, "_shared", None)
        if shared is not None:
            d.update({"engine": shared.path.name, "engine_source": shared.source, "key": shared.key.stem,
                      "precision": shared.key.precision, "compute_capability": shared.compute_capability,
                      "tensorrt_version": shared.tensorrt_version, "build_seconds": shared.build_seconds})
        return d
