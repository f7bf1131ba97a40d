"""Test doubles of the ``tensorrt`` and cuda-python runtime modules, for unit tests only.

They follow the documented Python APIs closely enough to check what our code calls and in which order:
``fake_tensorrt()`` records every builder call in ``trt.calls``; its "plans" are JSON with a magic header,
refused (``deserialize_cuda_engine`` -> None) when the header or TensorRT version differ, like a stale plan.
``fake_cudart()`` backs device memory with host memory so the backend's real data path (pinned staging,
async copies, buffer growth, tensor addresses) is exercised; it refuses copies outside live allocations.
A fake "ONNX" file is ``FAKEONNX`` + JSON {inputs, outputs, op}; anything else fails to parse.
"""

from __future__ import annotations

import ctypes
import enum
import json
import types
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"FAKEPLAN\n"
ONNX_MAGIC = b"FAKEONNX\n"


def write_fake_onnx(path, inputs: dict[str, tuple[str, list[int]]], outputs: dict[str, tuple[str, list[int]]],
                    op: str = "double") -> None:
    path.write_bytes(ONNX_MAGIC + json.dumps({"inputs": inputs, "outputs": outputs, "op": op}).encode())


# ----------------------------------------------------------------------------------------------------------
# cuda-python runtime
def fake_cudart(devices=(("NVIDIA A10", 8, 6),)) -> types.ModuleType:
    m = types.ModuleType("cuda.bindings.runtime")
    m.cudaError_t = enum.IntEnum("cudaError_t", {"cudaSuccess": 0, "cudaErrorInvalidValue": 1,
                                                 "cudaErrorMemoryAllocation": 2, "cudaErrorNoDevice": 100,
                                                 "cudaErrorInvalidDevice": 101})
    m.cudaMemcpyKind = enum.IntEnum("cudaMemcpyKind", {"cudaMemcpyHostToHost": 0, "cudaMemcpyHostToDevice": 1,
                                                       "cudaMemcpyDeviceToHost": 2})
    ok, E = m.cudaError_t.cudaSuccess, m.cudaError_t
    m.devices = list(devices)
    m.current = 0
    m.device_mem: dict[int, Any] = {}
    m.host_mem: dict[int, Any] = {}
    m.streams: set[int] = set()
    m.calls: list[tuple] = []

    class Stream:
        def __init__(self, n: int):
            self.n = n

        def __int__(self) -> int:
            return self.n

    def count():
        return (ok, len(m.devices)) if m.devices else (E.cudaErrorNoDevice, 0)

    def set_device(i):
        if not 0 <= i < len(m.devices):
            return (E.cudaErrorInvalidDevice,)
        m.current = i
        return (ok,)

    def props(i):
        if not 0 <= i < len(m.devices):
            return (E.cudaErrorInvalidDevice, None)
        name, major, minor = m.devices[i]
        return ok, types.SimpleNamespace(name=name.encode() + b"\0" * 8, major=major, minor=minor,
                                         totalGlobalMem=24 << 30)

    def alloc(table):
        def f(n):
            if n <= 0:
                return (E.cudaErrorInvalidValue, 0)
            buf = ctypes.create_string_buffer(n)
            table[ctypes.addressof(buf)] = buf
            m.calls.append(("alloc", n))
            return ok, ctypes.addressof(buf)
        return f

    def free(table):
        def f(ptr):
            if table.pop(int(ptr), None) is None:
                return (E.cudaErrorInvalidValue,)
            return (ok,)
        return f

    def inside(ptr, n, table):
        return any(base <= ptr and ptr + n <= base + len(buf) for base, buf in table.items())

    def memcpy_async(dst, src, n, kind, stream):
        if int(stream) not in m.streams:
            return (E.cudaErrorInvalidValue,)
        if kind == m.cudaMemcpyKind.cudaMemcpyHostToDevice:
            good = inside(dst, n, m.device_mem) and inside(src, n, m.host_mem)
        else:
            good = inside(dst, n, m.host_mem) and inside(src, n, m.device_mem)
        if not good:
            return (E.cudaErrorInvalidValue,)
        ctypes.memmove(dst, src, n)
        m.calls.append(("memcpy", kind.name, n))
        return (ok,)

    def stream_create():
        s = Stream(1000 + len(m.streams) + len(m.calls))
        m.streams.add(int(s))
        return ok, s

    def stream_destroy(s):
        m.streams.discard(int(s))
        return (ok,)

    m.cudaGetDeviceCount = count
    m.cudaSetDevice = set_device
    m.cudaGetDeviceProperties = props
    m.cudaMalloc = alloc(m.device_mem)
    m.cudaFree = free(m.device_mem)
    m.cudaMallocHost = alloc(m.host_mem)
    m.cudaFreeHost = free(m.host_mem)
    m.cudaMemcpyAsync = memcpy_async
    m.cudaStreamCreate = stream_create
    m.cudaStreamDestroy = stream_destroy
    m.cudaStreamSynchronize = lambda s: (ok,) if int(s) in m.streams else (E.cudaErrorInvalidValue,)
    return m


def install_cudart(monkeypatch, cudart: types.ModuleType) -> None:
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    cuda.bindings = bindings
    bindings.runtime = cudart
    monkeypatch.setitem(__import__("sys").modules, "cuda", cuda)
    monkeypatch.setitem(__import__("sys").modules, "cuda.bindings", bindings)
    monkeypatch.setitem(__import__("sys").modules, "cuda.bindings.runtime", cudart)


# ----------------------------------------------------------------------------------------------------------
# tensorrt
_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_,
       "INT8": np.int8}


def fake_tensorrt(version: str = "10.3.0", *, dla_cores: int = 0, build_fails: bool = False,
                  deserialize_raises: bool = False, has_progress_monitor: bool = True) -> types.ModuleType:
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []  # ("name", args...) in call order
    trt.builds = 0
    rec = trt.calls.append

    flags = ["TF32", "GPU_FALLBACK", "REFIT"] + (["FP16", "INT8", "BF16"] if major < 11 else [])
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE"])
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0})
    trt.DeviceType = enum.IntEnum("DeviceType", ["GPU", "DLA"])
    trt.HardwareCompatibilityLevel = enum.IntEnum("HardwareCompatibilityLevel", ["NONE", "AMPERE_PLUS"])
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    trt.ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"])
    trt.LayerInformationFormat = enum.IntEnum("LayerInformationFormat", ["ONELINE", "JSON"])
    trt.DataType = enum.IntEnum("DataType", list(_NP) + ["BF16"])
    _dt = {np.dtype(v).name: trt.DataType[k] for k, v in _NP.items()}

    def nptype(dt):
        if dt.name not in _NP:
            raise TypeError(f"no numpy type for {dt.name}")
        return _NP[dt.name]

    trt.nptype = nptype

    class ILogger:
        def __init__(self):
            pass

    trt.ILogger = ILogger
    trt.init_libnvinfer_plugins = lambda logger, ns: rec(("init_plugins",))
    if has_progress_monitor:
        class IProgressMonitor:
            def __init__(self):
                pass

        trt.IProgressMonitor = IProgressMonitor

    class Tensor:
        def __init__(self, name, dtype, shape):
            self.name, self.dtype, self.shape = name, dtype, tuple(shape)

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.model = None

        @property
        def num_inputs(self):
            return len(self.model["inputs"]) if self.model else 0

        def get_input(self, i):
            name, (dtype, shape) = list(self.model["inputs"].items())[i]
            return Tensor(name, _dt[dtype], shape)

    class ParserError:
        def __init__(self, text):
            self.text = text

        def __str__(self):
            return self.text

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network
            self.errors = []

        def parse_from_file(self, path):
            rec(("parse_from_file", str(path)))
            data = Path(path).read_bytes()
            if not data.startswith(ONNX_MAGIC):
                self.errors = [ParserError("In node -1 (parseGraph): INVALID_GRAPH: Failed to parse ONNX model"),
                               ParserError("second error")]
                return False
            self.network.model = json.loads(data[len(ONNX_MAGIC):])
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class TimingCache:
        def __init__(self, data):
            if data.startswith(b"BAD"):
                raise RuntimeError("timing cache version mismatch")
            self.data = data

        def serialize(self):
            return self.data + b"+"

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, mn, opt, mx):
            rec(("set_shape", name, tuple(mn), tuple(opt), tuple(mx)))
            self.shapes[name] = [list(mn), list(opt), list(mx)]

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.pool = set(), [], {}
            self.builder_optimization_level = None
            self.hardware_compatibility_level = trt.HardwareCompatibilityLevel.NONE
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1
            self.progress_monitor = None
            self.cache = None
            self.flags.add(trt.BuilderFlag.TF32)  # TF32 is on by default
            self.profiling_verbosity = trt.ProfilingVerbosity.LAYER_NAMES_ONLY  # TensorRT's default

        def set_flag(self, f):
            rec(("set_flag", f.name))
            self.flags.add(f)

        def clear_flag(self, f):
            rec(("clear_flag", f.name))
            self.flags.discard(f)

        def set_memory_pool_limit(self, pool, size):
            rec(("set_memory_pool_limit", pool.name, size))
            self.pool[pool.name] = size

        def add_optimization_profile(self, p):
            self.profiles.append(p.shapes)
            return len(self.profiles) - 1

        def create_timing_cache(self, data):
            rec(("create_timing_cache", bytes(data)))
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            self.num_DLA_cores = dla_cores

        def create_network(self, flags=0):
            rec(("create_network", flags))
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            rec(("build_serialized_network",))
            trt.builds += 1
            mon = config.progress_monitor
            if mon is not None:
                mon.phase_start("Building engine", None, 2)
                mon.step_complete("Building engine", 0)
                mon.phase_finish("Building engine")
            if build_fails:
                return None
            body = {"version": version, "model": network.model, "profiles": config.profiles,
                    "flags": sorted(f.name for f in config.flags), "network_flags": network.flags,
                    "dla": config.default_device_type == trt.DeviceType.DLA,
                    "verbosity": config.profiling_verbosity.name}
            return MAGIC + json.dumps(body).encode()

    class Engine:
        def __init__(self, body):
            self.body = body
            m = body["model"]
            self.io = [(n, trt.TensorIOMode.INPUT, d, s) for n, (d, s) in m["inputs"].items()]
            self.io += [(n, trt.TensorIOMode.OUTPUT, d, s) for n, (d, s) in m["outputs"].items()]
            self.contexts = 0

        @property
        def num_io_tensors(self):
            return len(self.io)

        @property
        def num_optimization_profiles(self):
            return len(self.body["profiles"])

        def get_tensor_name(self, i):
            return self.io[i][0]

        def _find(self, name):
            return next(t for t in self.io if t[0] == name)

        def get_tensor_mode(self, name):
            return self._find(name)[1]

        def get_tensor_dtype(self, name):
            return _dt[self._find(name)[2]]

        def create_execution_context(self):
            self.contexts += 1
            return Context(self)

        def create_engine_inspector(self):
            return Inspector(self)

    class Inspector:
        """Engine inspector JSON as TensorRT writes it: names only unless built DETAILED; formats "N/A due
        to dynamic shapes" unless a context with input shapes is set. A layer's format follows the precision
        flags (TensorRT 10) or the fake graph's "graph" type (strongly typed TensorRT 11)."""

        def __init__(self, engine):
            self.engine = engine
            self.execution_context = None

        def get_engine_information(self, fmt):
            rec(("get_engine_information", fmt.name))
            body = self.engine.body
            names = ["Reformatting CopyNode for Input Tensor 0 to fc", "fc", "relu"]
            if body.get("verbosity") != "DETAILED":
                return json.dumps({"Layers": names, "Bindings": ["x", "y"]})
            graph = body["model"].get("graph", "fp32")
            flags = set(body["flags"])
            kind = ("Int8" if "INT8" in flags or graph == "int8" else "FP16" if "FP16" in flags or graph == "fp16"
                    else "BFloat16" if "BF16" in flags or graph == "bf16" else "FP8" if graph == "fp8" else "FP32")
            fmt = {"Int8": "Row major Int8 format", "FP16": "Row major linear FP16 format",
                   "BFloat16": "Row major linear BFloat16 format", "FP8": "Row major linear FP8 format",
                   "FP32": "Row major linear FP32"}[kind]
            ctx = self.execution_context
            if body["profiles"] and (ctx is None or not ctx.shapes):
                fmt32 = fmt = "N/A due to dynamic shapes"
            else:
                fmt32 = "Row major linear FP32"

            def t(name, f):
                return {"Name": name, "Location": "Device", "Dimensions": [-1, 4], "Format/Datatype": f}

            layers = [
                {"Name": names[0], "LayerType": "Reformat", "Inputs": [t("x", fmt32)], "Outputs": [t("x'", fmt)]},
                {"Name": names[1], "LayerType": "CaskGemmMatrixMultiply", "ParameterType": "MatrixMultiply",
                 "Inputs": [t("x'", fmt)], "Outputs": [t("h", fmt)], "TacticValue": "0x1"},
                {"Name": names[2], "LayerType": "PointWiseV2", "ParameterType": "PointWise",
                 "Inputs": [t("h", fmt)], "Outputs": [t("y", fmt32)], "TacticValue": "0x2"},
            ]
            return json.dumps({"Layers": layers, "Bindings": ["x", "y"]})

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addr, self.profile = engine, {}, {}, None

        def set_optimization_profile_async(self, i, stream):
            self.profile = i
            return 0 <= i < max(1, self.engine.num_optimization_profiles)

        def set_input_shape(self, name, shape):
            rng = self.engine.body["profiles"][0].get(name) if self.engine.body["profiles"] else None
            if rng is not None and not all(a <= s <= b for s, a, b in zip(shape, rng[0], rng[2])):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            model = self.engine.body["model"]
            first = next(iter(model["inputs"]))
            return self.shapes[first] if model["op"] != "sum" else (self.shapes[first][0], 1)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = int(ptr)

        def execute_async_v3(self, stream_handle):
            model = self.engine.body["model"]
            arrays = {}
            for n, (d, _) in model["inputs"].items():
                arrays[n] = _view(self.addr[n], self.shapes[n], d).copy()
            x = arrays[next(iter(arrays))]
            for n, (d, _) in model["outputs"].items():
                res = x * 2 if model["op"] == "double" else x.sum(axis=1, keepdims=True)
                _view(self.addr[n], res.shape, d)[...] = res.astype(d)
            return True

    def _view(ptr, shape, dtype):
        dt = np.dtype(dtype)
        n = int(np.prod(shape)) * dt.itemsize
        raw = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), shape=(max(n, 1),))[:n]
        return raw.view(dt).reshape(shape)

    class Runtime:
        def __init__(self, logger):
            self.logger = logger
            self.num_DLA_cores = dla_cores
            self.DLA_core = -1

        def deserialize_cuda_engine(self, data):
            rec(("deserialize_cuda_engine",))
            if deserialize_raises:
                raise RuntimeError("Serialization assertion failed")
            data = bytes(data)
            if not data.startswith(MAGIC):
                return None
            body = json.loads(data[len(MAGIC):])
            if body["version"] != version:
                return None  # plans do not load across TensorRT versions
            return Engine(body)

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


def install_tensorrt(monkeypatch, trt: types.ModuleType) -> None:
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", trt)
