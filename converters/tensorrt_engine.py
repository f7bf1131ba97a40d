"""Step 7: compile the bundle's ONNX graph into a TensorRT engine, following the plan made at build time.

``make_build_plan`` (pure Python, from ``xinfer_sdk.accel.nvidia.engine_plan``) runs on any machine and is recorded in the
manifest. ``build_engine`` needs TensorRT 10 or 11 and a CUDA GPU: it runs in ``xinfer-sdk build`` when both
are present, otherwise the TensorRT backend runs it on the target at first load. It parses the ONNX file,
applies the plan for the INSTALLED TensorRT major (10: precision builder flags on a weakly typed network;
11: strongly typed, precision from the graph), reuses and updates the timing cache beside the engine, logs
progress while it builds, and writes ``sm86_trt10.3.0_fp16_<hash8>.plan``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from xinfer_sdk.accel.nvidia import _cudart
from xinfer_sdk.accel.nvidia.engine_plan import (
    engine_key,
    make_build_plan,
    normalize_trt_version,
    parse_device,
    settings_for,
    timing_cache_name,
    trt_major,
    trt_supports_gpu,
)
from xinfer_sdk.errors import ConversionError, EnginePrecisionError, MissingDependency

from . import engine_check

__all__ = ["make_build_plan", "unavailable_reason", "build_engine", "load_tensorrt", "deserialize", "trt_logger"]

_log = logging.getLogger(__name__)

INSTALL_HINT = ("pip install 'xinfer-sdk[tensorrt]' (x86-64/SBSA: the tensorrt wheels fetch NVIDIA's libraries from "
                "pypi.nvidia.com); on Jetson use JetPack's TensorRT (apt install python3-libnvinfer)")
HEARTBEAT_S = 15.0  # a "still building" line at least this often, so a long build is never silent
_LEVELS = {"INTERNAL_ERROR": logging.ERROR, "ERROR": logging.ERROR, "WARNING": logging.WARNING,
           "INFO": logging.DEBUG, "VERBOSE": logging.DEBUG}
_trt_loggers: dict[int, tuple[ModuleType, Any]] = {}
_lock = threading.Lock()


# ----------------------------------------------------------------------------------------------------------
# Imports and availability
def load_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or MissingDependency naming the extra (the PyPI stub may fail at import)."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or the stub wheel's own error when NVIDIA's index was unreachable
        raise MissingDependency("tensorrt", "tensorrt", purpose="building TensorRT engines",
                                cause=f"{type(exc).__name__}: {exc}") from None
    return trt


def unavailable_reason(device: str | int = 0) -> str | None:
    """None when ``tensorrt`` imports and a CUDA device is visible; else one line saying why and what to do."""
    try:
        trt = load_tensorrt()
    except MissingDependency:
        return f"TensorRT is not installed ({INSTALL_HINT})"
    try:
        cudart = _cudart.load()
    except MissingDependency:
        return "cuda-python is not installed (pip install 'xinfer-sdk[tensorrt]')"
    index = device if isinstance(device, int) else parse_device(device)
    count, why = _cudart.device_status(cudart)  # why names the cudaError_t (a driver too old for cuda-python 13...)
    if count == 0:
        return why or "no CUDA device is visible (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides them)"
    if index >= count:
        return f"CUDA device {index} does not exist ({count} visible)"
    version = normalize_trt_version(trt.__version__)
    try:
        cc = _cudart.device_properties(cudart, index)["compute_capability"]
    except _cudart.CudaError as exc:
        return str(exc)
    return trt_supports_gpu(cc, version)


def trt_logger(trt: ModuleType) -> Any:
    """One ILogger per TensorRT module that forwards to Python logging (TensorRT INFO goes to DEBUG)."""
    with _lock:
        existing = _trt_loggers.get(id(trt))
        if existing is not None and existing[0] is trt:
            return existing[1]

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                name = getattr(severity, "name", str(severity)).rsplit(".", 1)[-1]
                _log.log(_LEVELS.get(name, logging.DEBUG), "TensorRT: %s", msg)

        logger = _Logger()
        _trt_loggers[id(trt)] = (trt, logger)  # holding the module keeps its id from being reused
        init = getattr(trt, "init_libnvinfer_plugins", None)
        if init is not None:
            init(logger, "")
        return logger


def deserialize(trt: ModuleType, data: bytes, *, dla_core: int | None = None) -> tuple[Any, Any] | None:
    """(ICudaEngine, its Runtime) from plan bytes, or None when the plan is stale, foreign or corrupt.

    Never raises for a bad plan: the caller rebuilds it or skips it. The runtime must outlive the engine.
    """
    try:
        runtime = trt.Runtime(trt_logger(trt))
        if dla_core is not None and int(getattr(runtime, "num_DLA_cores", 0) or 0) > dla_core:
            runtime.DLA_core = dla_core
        engine = runtime.deserialize_cuda_engine(data)
    except Exception as exc:  # some versions raise instead of returning None
        _log.warning("TensorRT could not deserialize the plan: %s", exc)
        return None
    if engine is None:
        return None
    return engine, runtime


# ----------------------------------------------------------------------------------------------------------
# Build
def _progress_monitor(trt: ModuleType, say: Callable[[str], None]) -> Any | None:
    """An IProgressMonitor that logs top-level phases and, at most every few seconds, their steps."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):
        def __init__(self) -> None:
            base.__init__(self)
            self._last = 0.0
            self._plock = threading.Lock()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                say(f"TensorRT phase: {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            now = time.monotonic()
            with self._plock:
                if now - self._last >= 5.0:
                    self._last = now
                    say(f"TensorRT {phase_name}: step {step + 1}")
            return True

        def phase_finish(self, phase_name: str) -> None:
            pass

    return _Monitor()


def _network(trt: ModuleType, builder: Any, major: int, typing: str | None) -> Any:
    flags = 0
    if major == 10 and typing == "strongly_typed":
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flags)


def _parse(trt: ModuleType, network: Any, onnx_path: Path, logger: Any, version: str) -> Any:
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))  # from a path, so external weights resolve
    if not ok:
        errors = [str(parser.get_error(i)).strip() for i in range(int(parser.num_errors))]
        first = errors[0] if errors else "no error detail"
        more = f" (+{len(errors) - 1} more, see the log)" if len(errors) > 1 else ""
        for e in errors[1:]:
            _log.error("TensorRT ONNX parser: %s", e)
        raise ConversionError(f"TensorRT {version} cannot parse {onnx_path.name}: {first}{more}",
                              hint="check the operators against TensorRT's ONNX support matrix, or deploy with "
                                   "the onnxruntime backend")
    return parser


def _set_flag(trt: ModuleType, config: Any, name: str, *, clear: bool = False) -> None:
    flag = getattr(trt.BuilderFlag, name, None)
    if flag is None:
        if clear:
            return
        raise ConversionError(f"this TensorRT ({trt.__version__}) has no builder flag {name}")
    (config.clear_flag if clear else config.set_flag)(flag)


def _add_profiles(trt: ModuleType, builder: Any, network: Any, config: Any, plan: Mapping[str, Any]) -> None:
    inputs = [network.get_input(i) for i in range(int(network.num_inputs))]
    names = {t.name for t in inputs}
    for ranges in plan.get("profiles") or []:
        unknown = sorted(set(ranges) - names)
        if unknown:
            raise ConversionError(f"the build plan has shapes for {', '.join(unknown)} but the ONNX graph's inputs "
                                  f"are {', '.join(sorted(names))}", hint="rebuild the bundle")
        profile = builder.create_optimization_profile()
        for name, rng in ranges.items():
            profile.set_shape(name, tuple(rng["min"]), tuple(rng["opt"]), tuple(rng["max"]))
        config.add_optimization_profile(profile)
    covered = set().union(*(set(r) for r in plan.get("profiles") or [{}]))
    for t in inputs:
        if any(int(d) < 0 for d in t.shape) and t.name not in covered:
            raise ConversionError(f"input {t.name!r} has dynamic shape {list(t.shape)} but the build plan gives no "
                                  "range for it", hint="rebuild the bundle with --shapes for that input")


def _timing_cache(config: Any, path: Path) -> Any:
    data = b""
    if path.is_file():
        data = path.read_bytes()
    try:
        cache = config.create_timing_cache(data)
        if not config.set_timing_cache(cache, False):
            raise RuntimeError("set_timing_cache returned False")
    except Exception as exc:  # stale / foreign / corrupt cache file: start from an empty one
        _log.warning("timing cache %s not usable (%s); starting an empty one", path.name, exc)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, True)
    return cache


def _atomic_write(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _heartbeat(say: Callable[[str], None], what: str) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            say(f"{what}: still building ({time.monotonic() - start:.0f} s)")

    t = threading.Thread(target=beat, name="xinfer-trt-heartbeat", daemon=True)
    t.start()
    return stop, t


def build_engine(onnx_path: str | os.PathLike[str], plan: Mapping[str, Any], out_dir: str | os.PathLike[str], *,
                 log: Callable[[str], None] | None = None, device: str | int = "cuda:0") -> dict[str, Any]:
    """Compile ``onnx_path`` with ``plan`` on this GPU; write the engine and timing cache into ``out_dir``.

    Returns {path, key, timing_cache, seconds, tensorrt_version, compute_capability, dla, precision}.
    Raises ConversionError (ONNX not parseable, build failed) or MissingDependency / BackendUnavailable-style
    errors when TensorRT or CUDA is missing.
    """
    say = log or _log.info
    onnx_path = Path(onnx_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trt = load_tensorrt()
    cudart = _cudart.load()
    index = device if isinstance(device, int) else parse_device(device)
    _cudart.set_device(cudart, index)
    props = _cudart.device_properties(cudart, index)
    cc = props["compute_capability"]
    version = normalize_trt_version(trt.__version__)
    major = trt_major(version)
    why = trt_supports_gpu(cc, version)
    if why:
        raise ConversionError(f"cannot build a TensorRT engine here: {why}")
    if plan.get("hardware_compatibility") == "ampere+" and tuple(int(x) for x in cc.split(".")) < (8, 0):
        raise ConversionError(f"the plan asks for an Ampere+ compatible engine but {props['name']} is sm_{cc}")
    settings = settings_for(plan, major)
    if not settings.get("supported"):
        raise ConversionError(settings.get("note") or f"TensorRT {version} is not supported")
    key = engine_key(plan, cc, version)
    batch = plan.get("batch") or {}
    shape_txt = f", batch {batch['min']}..{batch['opt']}..{batch['max']}" if batch else ""
    say(f"TensorRT {version}: building {key.filename} for {props['name']} (sm_{cc.replace('.', '')}, "
        f"{plan['precision']}{shape_txt}) from {onnx_path.name}; this can take minutes")
    t0 = time.monotonic()

    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network = _network(trt, builder, major, settings.get("network"))
    parser = _parse(trt, network, onnx_path, logger, version)
    config = builder.create_builder_config()
    if plan.get("workspace_bytes"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(plan["workspace_bytes"]))
    if plan.get("builder_optimization_level") is not None:
        config.builder_optimization_level = int(plan["builder_optimization_level"])
    for name in settings.get("set_flags") or []:
        _set_flag(trt, config, name)
    for name in settings.get("clear_flags") or []:
        _set_flag(trt, config, name, clear=True)
    _add_profiles(trt, builder, network, config, plan)
    if plan.get("hardware_compatibility") == "ampere+":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    dla_used = _configure_dla(trt, builder, config, plan, say, version)
    engine_check.set_detailed_profiling(trt, config)  # the engine inspector then reports layer formats
    tc_path = out / timing_cache_name(cc, version)
    _timing_cache(config, tc_path)
    monitor = _progress_monitor(trt, say)
    if monitor is not None:
        config.progress_monitor = monitor

    stop, beat = _heartbeat(say, key.filename)
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        stop.set()
        beat.join(timeout=1.0)
    if serialized is None:
        raise ConversionError(f"TensorRT {version} failed to build the engine for {onnx_path.name} (see the "
                              "TensorRT errors logged above)", hint="try the onnxruntime backend, or a smaller "
                              "max batch size / workspace if it ran out of memory")
    layers = _verify_precision(trt, serialized, plan, key.filename, version, dla_core=0 if dla_used else None)
    say(f"TensorRT: layer precisions of {key.filename}: {engine_check.describe(layers)} ({layers['verdict']})")
    engine_path = out / key.filename
    _atomic_write(engine_path, serialized)
    timing_path: Path | None = None
    try:
        updated = config.get_timing_cache()
        if updated is not None:
            _atomic_write(tc_path, updated.serialize())
            timing_path = tc_path
    except Exception as exc:  # the engine is what matters; a cache that cannot be saved only costs time
        _log.warning("could not save the TensorRT timing cache to %s: %s", tc_path, exc)
    del parser
    seconds = time.monotonic() - t0
    say(f"TensorRT: built {engine_path.name} in {seconds:.1f} s")
    return {"path": str(engine_path), "key": key.stem, "timing_cache": str(timing_path) if timing_path else None,
            "seconds": round(seconds, 3), "tensorrt_version": version, "compute_capability": cc,
            "precision": plan["precision"], "plan_hash": plan.get("hash"), "dla": dla_used,
            "device_name": props["name"], "layer_precisions": layers}


def _configure_dla(trt: ModuleType, builder: Any, config: Any, plan: Mapping[str, Any], say: Callable[[str], None],
                   version: str) -> bool:
    """DLA (with GPU fallback) only for a static plan on a TensorRT that sees DLA cores; True when used.

    DLA needs min = opt = max: a plan recorded by an older xinfer-sdk with DLA on a dynamic profile is built
    for the GPU, and the log says so instead of claiming DLA (with GPU fallback it would run on the GPU anyway).
    """
    dla = dict(plan.get("dla") or {})
    if not dla.get("enabled"):
        if dla.get("requested"):
            say(f"TensorRT: DLA not used: {dla.get('reason')}")
        return False
    dynamic = [n for n, r in ((plan.get("profiles") or [{}])[0] or {}).items()
               if not (list(r["min"]) == list(r["opt"]) == list(r["max"]))]
    if dynamic:
        say(f"TensorRT: DLA not used: DLA needs min = opt = max shapes and {', '.join(dynamic)} is dynamic in this "
            "plan; building for the GPU")
        return False
    core = int(dla.get("core", 0))
    if int(getattr(builder, "num_DLA_cores", 0) or 0) <= core:
        say(f"TensorRT {version} sees no DLA core {core} here; building for the GPU alone")
        return False
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    if dla.get("gpu_fallback", True):
        _set_flag(trt, config, "GPU_FALLBACK")
    say(f"TensorRT: layers go to DLA core {core} (static shapes)" +
        (" with GPU fallback for layers DLA cannot run" if dla.get("gpu_fallback", True) else ""))
    return True


def _verify_precision(trt: ModuleType, serialized: Any, plan: Mapping[str, Any], name: str, version: str, *,
                      dla_core: int | None) -> dict[str, Any]:
    """Read the built engine's layer precisions; ConversionError when the requested precision did not happen."""
    loaded = deserialize(trt, bytes(serialized), dla_core=dla_core)
    if loaded is None:
        layers = engine_check._unverified(str(plan["precision"]), "the built plan could not be deserialized for "
                                                                   "inspection")
    else:
        engine, runtime = loaded
        layers = engine_check.inspect_engine(trt, engine, plan)
        del engine, runtime
    if layers["verdict"] == "failed":
        raise EnginePrecisionError(f"TensorRT {version} built {name} but the requested {plan['precision']} precision did "
                              f"not happen: {layers['reason']}; the engine was not kept",
                              hint="TensorRT 11 takes FP16/BF16 from the graph's types: rebuild the bundle with "
                                   "this xinfer-sdk (it converts the graph), or build with TensorRT 10")
    if layers["verdict"] == "unverified":
        _log.warning("TensorRT: layer precisions of %s not verified: %s", name, layers.get("reason"))
    return layers
