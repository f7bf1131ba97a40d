"""TensorRTBackend against test doubles of tensorrt and cuda-python: engine lookup, build-on-first-use,
stale plans, sharing, buffers and the data path. The real engine runs only in tests/gpu/."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import yaml

from xinfer_sdk.bundle import Bundle, open_bundle
from xinfer_sdk.errors import InvalidInput
from xinfer_sdk.profiles import load_profile
from xinfer_sdk.runtime.backends.tensorrt import TensorRTBackend

A10 = load_profile("a10")


def run(bundle, x, **kw):
    with TensorRTBackend(bundle, profile=A10, device="cuda:0", **kw) as be:
        return be.infer({"x": x}), be.describe()


def test_unavailable_reason(trt, gpu, bundle, monkeypatch):
    import sys

    b = bundle()
    assert "not 'cpu'" in TensorRTBackend.unavailable_reason(b, A10, "cpu")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert "TensorRT is not installed" in TensorRTBackend.unavailable_reason(b, A10, "cuda")
    trt()
    assert TensorRTBackend.unavailable_reason(b, A10, "cuda") is None
    b.manifest.engine_plan = None  # an old bundle: the plan is made from the profile when it can be
    assert TensorRTBackend.unavailable_reason(b, A10, "cuda:0") is None


def test_first_activate_builds_caches_and_registers_then_infers(trt, gpu, bundle, caplog):
    mod = trt()
    b = bundle()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    with caplog.at_level(logging.INFO):
        out, info = run(b, x)
    np.testing.assert_array_equal(out["y"], 2 * x)
    assert out["y"].dtype == np.float32 and out["y"].shape == (3, 4)
    assert mod.builds == 1 and info["engine_source"] == "built" and info["build_seconds"] is not None
    assert "no TensorRT engine for sm_86 / TensorRT 10.3.0" in caplog.text and "built TensorRT engine" in caplog.text
    # the engine and timing cache live in the bundle and the manifest lists them with checksums
    reopened = open_bundle(b.root)
    engines = reopened.manifest.artifacts_by_role("engine")
    assert [a.path for a in engines] == [f"engines/{info['key']}.plan"]
    assert engines[0].meta["tensorrt_version"] == "10.3.0"
    assert reopened.manifest.artifacts_by_role("timing_cache")[0].path == "engines/timing_sm86_trt10.3.0.cache"


def test_second_activation_loads_the_cached_plan(trt, gpu, bundle):
    mod = trt()
    b = bundle()
    run(b, np.ones((1, 4), np.float32))
    TensorRTBackend._engines.clear()
    out, info = run(open_bundle(b.root), np.ones((2, 4), np.float32))
    assert mod.builds == 1 and info["engine_source"] == "bundle"
    np.testing.assert_array_equal(out["y"], np.full((2, 4), 2, np.float32))


def test_a_new_tensorrt_version_builds_its_own_plan(trt, gpu, bundle):
    trt("10.3.0")
    b = bundle()
    run(b, np.ones((1, 4), np.float32))
    TensorRTBackend._engines.clear()
    mod = trt("10.4.0")  # the old plan's key names 10.3.0: not even tried
    _, info = run(open_bundle(b.root), np.ones((1, 4), np.float32))
    assert mod.builds == 1 and info["key"].startswith("sm86_trt10.4.0_")
    assert len(open_bundle(b.root).manifest.artifacts_by_role("engine")) == 2


def test_stale_or_foreign_plan_is_skipped_and_rebuilt(trt, gpu, bundle, caplog):
    trt()
    b = bundle()
    _, info = run(b, np.ones((1, 4), np.float32))
    TensorRTBackend._engines.clear()
    # a plan with the right name and checksum that this TensorRT refuses (built by another build of 10.3.0)
    plan_file = b.root / "engines" / f"{info['key']}.plan"
    plan_file.write_bytes(b"\x00not a plan from this TensorRT")
    b2 = open_bundle(b.root, verify=False)
    b2.add_artifact(plan_file, role="engine")
    mod = trt()
    with caplog.at_level(logging.WARNING):
        out, info2 = run(open_bundle(b.root), np.ones((1, 4), np.float32))
    assert "stale or foreign" in caplog.text
    assert mod.builds == 1 and info2["engine_source"] == "built"
    np.testing.assert_array_equal(out["y"], np.full((1, 4), 2, np.float32))
    TensorRTBackend._engines.clear()
    mod = trt(deserialize_raises=True)  # a TensorRT that raises instead of returning None is handled too
    with pytest.raises(Exception, match="cannot load it back"):
        run(open_bundle(b.root), np.ones((1, 4), np.float32))
    assert mod.builds == 1


def test_corrupted_plan_fails_its_checksum_and_is_rebuilt(trt, gpu, bundle, caplog):
    trt()
    b = bundle()
    _, info = run(b, np.ones((1, 4), np.float32))
    TensorRTBackend._engines.clear()
    plan_file = b.root / "engines" / f"{info['key']}.plan"
    data = bytearray(plan_file.read_bytes())
    data[-3] ^= 0xFF
    plan_file.write_bytes(bytes(data))
    mod = trt()
    with caplog.at_level(logging.WARNING):
        out, info2 = run(open_bundle(b.root, verify=False), np.ones((1, 4), np.float32))
    assert "checksum mismatch" in caplog.text and mod.builds == 1
    np.testing.assert_array_equal(out["y"], np.full((1, 4), 2, np.float32))
    open_bundle(b.root)  # the rebuilt plan re-registered: the bundle verifies again


def test_read_only_bundle_caches_in_the_user_dir(trt, gpu, bundle, monkeypatch, tmp_path):
    mod = trt()
    b = bundle()
    monkeypatch.setattr(Bundle, "engines_writable", lambda self: False)  # a readOnly volume
    _, info = run(b, np.ones((1, 4), np.float32))
    sha = b.manifest.artifacts_by_role("model")[0].sha256
    cached = tmp_path / "user-cache" / "engines" / sha[:16] / f"{info['key']}.plan"
    assert cached.is_file()
    assert not b.manifest.artifacts_by_role("engine")
    TensorRTBackend._engines.clear()
    _, info = run(b, np.ones((1, 4), np.float32))
    assert info["engine_source"] == "user-cache" and mod.builds == 1


def test_workers_share_one_engine_with_one_context_each(trt, gpu, bundle):
    mod = trt()
    b = bundle()
    backends = [TensorRTBackend(b, profile=A10, device="cuda:0") for _ in range(3)]
    errors, results = [], {}

    def work(i, be):
        try:
            be.activate()
            x = np.full((i + 1, 4), i, np.float32)
            results[i] = be.infer({"x": x})["y"]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, be)) for i, be in enumerate(backends)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and mod.builds == 1
    shared = backends[0]._shared
    assert all(be._shared is shared for be in backends) and shared.engine.contexts == 3
    assert len({be._stream.handle for be in backends}) == 3
    for i in range(3):
        np.testing.assert_array_equal(results[i], np.full((i + 1, 4), 2 * i, np.float32))
    for be in backends:
        be.deactivate()
    assert not TensorRTBackend._engines  # the last worker out frees the engine
    assert not gpu.device_mem and not gpu.host_mem and not gpu.streams


def test_buffers_grow_for_a_larger_batch_and_are_reused(trt, gpu, bundle):
    trt()
    b = bundle(max_batch_size=64)
    with TensorRTBackend(b, profile=A10, device="cuda") as be:
        be.infer({"x": np.ones((1, 4), np.float32)})
        allocs = len([c for c in gpu.calls if c[0] == "alloc"])
        be.infer({"x": np.ones((1, 4), np.float32)})
        assert len([c for c in gpu.calls if c[0] == "alloc"]) == allocs  # reused
        x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
        np.testing.assert_array_equal(be.infer({"x": x})["y"], 2 * x)
        assert len([c for c in gpu.calls if c[0] == "alloc"]) > allocs  # grown
        copies = [c for c in gpu.calls if c[0] == "memcpy"][-2:]
        assert copies == [("memcpy", "cudaMemcpyHostToDevice", 64 * 16), ("memcpy", "cudaMemcpyDeviceToHost", 64 * 16)]
    assert not gpu.device_mem and not gpu.host_mem


def test_batch_outside_the_engine_profile_is_invalid_input(trt, gpu, bundle):
    trt()
    b = bundle(max_batch_size=8)
    with TensorRTBackend(b, profile=A10, device="cuda:0") as be, pytest.raises(InvalidInput, match="1x4 .. 8x4"):
        be.infer({"x": np.ones((9, 4), np.float32)})


def test_inputs_are_cast_to_the_engine_dtype_and_outputs_shaped_by_the_context(trt, gpu, bundle):
    trt()
    b = bundle(op="sum")
    x = np.arange(8, dtype=np.float64).reshape(2, 4)
    out, _ = run(b, x)
    np.testing.assert_array_equal(out["y"], np.array([[6.0], [22.0]], np.float32))


def test_parse_failure_on_the_target_is_a_clear_error(trt, gpu, bundle):
    trt()
    b = bundle(onnx=b"not onnx at all")
    with pytest.raises(Exception, match="cannot parse model.onnx"):
        run(b, np.ones((1, 4), np.float32))
    assert not TensorRTBackend._engines


def test_device_index_is_used(trt, gpu, bundle):
    trt()
    gpu.devices.append(("NVIDIA L4", 8, 9))
    b = bundle()
    _, info = run_on(b, "cuda:1")
    assert info["compute_capability"] == "8.9" and info["key"].startswith("sm89_")
    assert "does not exist" in TensorRTBackend.unavailable_reason(b, A10, "cuda:2")


def run_on(bundle, device):
    with TensorRTBackend(bundle, profile=A10, device=device) as be:
        return be.infer({"x": np.ones((1, 4), np.float32)}), be.describe()


def test_manifest_records_engine_meta_as_plain_yaml(trt, gpu, bundle):
    trt()
    b = bundle()
    run(b, np.ones((1, 4), np.float32))
    doc = yaml.safe_load((b.root / "xinfer.yaml").read_text())
    eng = [a for a in doc["artifacts"] if a["role"] == "engine"][0]
    assert eng["meta"]["precision"] == "fp16" and eng["meta"]["compute_capability"] == "8.6"


def test_cuda_errors_name_the_call(trt, gpu, bundle):
    from xinfer_sdk.accel.nvidia import _cudart

    trt()
    b = bundle()
    E = gpu.cudaError_t
    gpu.cudaMalloc = lambda n: (E.cudaErrorMemoryAllocation, 0)
    with TensorRTBackend(b, profile=A10, device="cuda:0") as be, \
            pytest.raises(_cudart.CudaError, match=r"cudaMalloc\(256\) failed: cudaErrorMemoryAllocation"):
        be.infer({"x": np.ones((1, 4), np.float32)})
    assert not gpu.streams  # deactivated cleanly after the error


def test_stream_handle_is_the_native_handle_never_the_wrapper_address(monkeypatch):
    """cuda-bindings 13: int(stream) is deprecated in favour of cuda.bindings.utils.get_cuda_native_handle, and
    getPtr() is the address of the Python wrapper's storage (review D7)."""
    import sys
    import types

    from xinfer_sdk.accel.nvidia import _cudart

    class Stream13:  # int() removed, as announced; getPtr() is the wrapper, not the stream
        def __init__(self, n):
            self.n = n

        def getPtr(self):
            return 0x7FB8C2AE37A0

    utils = types.ModuleType("cuda.bindings.utils")
    utils.get_cuda_native_handle = lambda obj: obj.n if isinstance(obj, Stream13) else int(obj)
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.bindings, bindings.utils, bindings.__path__ = bindings, utils, []
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.utils", utils)
    assert _cudart.handle(Stream13(0x1234)) == 0x1234
    monkeypatch.setitem(sys.modules, "cuda.bindings.utils", None)  # cuda-python 12.6: no utils -> int()
    assert _cudart.handle(5678) == 5678


def _scalar_bundle(root):
    """A bundle whose model takes a rank-0 input and gives a rank-0 output (no batch axis)."""
    from trt_doubles import write_fake_onnx

    from xinfer_sdk.accel.nvidia.engine_plan import make_build_plan
    from xinfer_sdk.bundle import Manifest, TensorSpec, register, save_manifest

    root.mkdir()
    write_fake_onnx(root / "model.onnx", {"x": ["float32", []]}, {"y": ["float32", []]})
    inputs, outputs = [TensorSpec("x", "float32", ())], [TensorSpec("y", "float32", ())]
    plan = make_build_plan(profile=A10, precision="fp32", inputs=inputs, max_batch_size=0)
    mf = Manifest(name="scalar", inputs=inputs, outputs=outputs, precision="fp32", max_batch_size=0,
                  profile={"name": "a10"}, batch={}, engine_plan=plan)
    register(root, mf, "model.onnx", role="model")
    save_manifest(root, mf)
    return open_bundle(root)


def test_scalar_input_keeps_rank_zero(trt, gpu, tmp_path):
    """np.ascontiguousarray makes a 0-d array 1-d; TensorRT would refuse rank 1 for a rank-0 input (review D10)."""
    mod = trt()
    b = _scalar_bundle(tmp_path / "scalar.xinfer")
    shapes = []
    real = mod.Runtime.deserialize_cuda_engine

    def recording(self, data):
        engine = real(self, data)
        make = engine.create_execution_context

        def context():
            ctx = make()
            orig = ctx.set_input_shape
            ctx.set_input_shape = lambda name, shape: shapes.append(tuple(shape)) or orig(name, shape)
            return ctx

        engine.create_execution_context = context
        return engine

    mod.Runtime.deserialize_cuda_engine = recording
    with TensorRTBackend(b, profile=A10, device="cuda:0") as be:
        out = be.infer({"x": np.array(3.0, np.float32)})
    assert shapes == [()]
    assert out["y"].shape == () and float(out["y"]) == 6.0


def _engine_with_profiles(mod, count, fail=False):
    calls = []
    real = mod.Runtime.deserialize_cuda_engine

    def patched(self, data):
        engine = real(self, data)
        if engine is None:
            return None
        type(engine).num_optimization_profiles = property(lambda e: count)
        make = engine.create_execution_context

        def context():
            ctx = make()

            def select(i, stream):  # the binding: PY_ASSERT_RUNTIME_ERROR, never returns False
                calls.append((i, stream))
                if fail:
                    raise RuntimeError("Error in set optimization profile async.")
                return True

            ctx.set_optimization_profile_async = select
            return ctx

        engine.create_execution_context = context
        return engine

    mod.Runtime.deserialize_cuda_engine = patched
    return calls


def test_profile_zero_is_selected_only_when_the_engine_has_several(trt, gpu, bundle):
    """NVIDIA's common_runtime.py selects a profile only when num_optimization_profiles > 1 (review D11)."""
    calls = _engine_with_profiles(trt(), 1)
    run(bundle(), np.ones((1, 4), np.float32))
    assert calls == []
    TensorRTBackend._engines.clear()
    calls = _engine_with_profiles(trt(), 2)
    _, info = run(bundle("two.xinfer"), np.ones((1, 4), np.float32))
    assert [c[0] for c in calls] == [0] and isinstance(calls[0][1], int)


def test_profile_selection_failure_is_backend_unavailable(trt, gpu, bundle):
    """set_optimization_profile_async raises RuntimeError: it surfaces as BackendUnavailable (review D11)."""
    from xinfer_sdk.errors import BackendUnavailable

    _engine_with_profiles(trt(), 2, fail=True)
    with pytest.raises(BackendUnavailable, match="refused optimization profile 0"):
        run(bundle(), np.ones((1, 4), np.float32))
    assert not gpu.streams and not gpu.device_mem  # cleaned up


def test_a_build_does_not_block_other_engines(trt, gpu, bundle):
    """One model's minutes-long build holds only its own engine key (review D14)."""
    mod = trt()
    first, second = bundle("slow.xinfer"), bundle("fast.xinfer")
    started, release = threading.Event(), threading.Event()
    real = mod.Builder.build_serialized_network

    def slow_first(self, network, config):
        if not started.is_set():
            started.set()
            release.wait(20)
        return real(self, network, config)

    mod.Builder.build_serialized_network = slow_first
    slow = TensorRTBackend(first, profile=A10, device="cuda:0")
    fast = TensorRTBackend(second, profile=A10, device="cuda:0")
    t_slow = threading.Thread(target=slow.activate)
    t_fast = threading.Thread(target=fast.activate)
    try:
        t_slow.start()
        assert started.wait(10)
        t_fast.start()
        t_fast.join(10)
        assert not t_fast.is_alive() and fast.active, "the second model waited for the first model's build"
    finally:
        release.set()
        t_slow.join(10)
        t_fast.join(10)
    assert slow.active and mod.builds == 2
    slow.deactivate()
    fast.deactivate()


def test_auto_falls_back_to_the_next_backend_when_the_tensorrt_build_fails(trt, gpu, bundle, monkeypatch, caplog):
    """backend='auto': a TensorRT build failure (parser, builder) moves on to the next backend (review D14)."""
    import xinfer_sdk as xs
    from xinfer_sdk.errors import XinferError
    from xinfer_sdk.runtime.backends import select
    from xinfer_sdk.runtime.backends.base import Backend

    class Doubling(Backend):  # stands in for ONNX Runtime's CUDA EP, which this machine does not have
        name = "onnxruntime"

        @classmethod
        def unavailable_reason(cls, bundle, profile, device):
            return None

        def activate_impl(self):
            pass

        def infer_impl(self, feeds):
            return {"y": feeds["x"] * 2}

    real = select.backend_class
    monkeypatch.setattr(select, "backend_class", lambda name: Doubling if name == "onnxruntime" else real(name))
    trt(build_fails=True)
    b = bundle()
    with caplog.at_level(logging.WARNING), xs.load(b.root, profile="a10", device="cuda:0") as m:
        d = m.describe()
        assert d["backend"] == "onnxruntime" and "tensorrt" in d["skipped"]
        assert any("backend tensorrt failed to start" in n for n in d["notes"])
        np.testing.assert_array_equal(m.infer({"x": np.ones((2, 4), np.float32)})["y"], np.full((2, 4), 2.0))
    assert "tensorrt failed to start" in caplog.text
    with pytest.raises(XinferError):  # a named backend still fails
        xs.load(b.root, profile="a10", device="cuda:0", backend="tensorrt")


def test_insufficient_driver_is_named_not_no_device(trt, gpu, bundle, monkeypatch):
    """cuda-python 13 on an R535 driver: cudaErrorInsufficientDriver, not 'no CUDA device' (review D3)."""
    import enum

    from xinfer_sdk.accel.nvidia import _cudart

    E = enum.IntEnum("cudaError_t", {"cudaSuccess": 0, "cudaErrorInsufficientDriver": 35})
    gpu.cudaGetDeviceCount = lambda: (E.cudaErrorInsufficientDriver, None)
    gpu.cudaDriverGetVersion = lambda: (E.cudaSuccess, 12020)
    gpu.cudaRuntimeGetVersion = lambda: (E.cudaSuccess, 13050)
    monkeypatch.setattr(_cudart, "bindings_version", lambda: None)
    trt()
    why = TensorRTBackend.unavailable_reason(bundle(), A10, "cuda:0")
    assert "driver too old for cuda-python 13.x" in why and "(cudaErrorInsufficientDriver)" in why
    assert "cuda-python>=12.6.1,<13" in why and "R580" in why
    assert _cudart.device_count(gpu) == 0
    gpu.cudaDriverGetVersion = lambda: (E.cudaSuccess, 0)  # no driver at all
    assert "no NVIDIA driver is loaded" in _cudart.device_status(gpu)[1]


def test_engine_io_without_a_numpy_type_is_refused(trt, gpu, bundle):
    b = bundle()
    mod = trt()
    real = mod.Runtime.deserialize_cuda_engine

    def bf16_outputs(self, data):
        engine = real(self, data)
        if engine is not None:
            engine.get_tensor_dtype = lambda name: mod.DataType.BF16
        return engine

    mod.Runtime.deserialize_cuda_engine = bf16_outputs
    with pytest.raises(Exception, match="no numpy equivalent"):
        run(b, np.ones((1, 4), np.float32))


def test_policy_above_the_engine_plan_is_capped_and_larger_requests_split(trt, gpu, bundle):
    """A plan or tune may ask for batches the bundle's engine was not built for: the runtime caps the policy at
    the engine plan's max (saying so) and splits a bigger request instead of failing it."""
    import xinfer_sdk as xs

    trt()
    b = bundle(max_batch_size=8)
    with xs.load(b.root, profile="a10", device="cuda", backend="tensorrt",
                 batching={"max_batch_size": 64, "preferred_batch_sizes": [8, 32]}) as m:
        assert m.policy.max_batch_size == 8 and m.policy.preferred_batch_sizes == (8,)
        assert any("lowered to 8" in n for n in m.describe()["notes"])
        out = m.infer({"x": np.ones((20, 4), np.float32)})
        np.testing.assert_array_equal(out["y"], np.full((20, 4), 2, np.float32))
