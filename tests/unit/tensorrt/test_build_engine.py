"""build_engine / unavailable_reason against test doubles of tensorrt and cuda-python (no GPU here).

These check the calls our code makes, in order, and its error handling; they do not prove TensorRT builds
anything. The real build runs in tests/gpu/ (skipped without a CUDA device).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from trt_doubles import MAGIC, ONNX_MAGIC, write_fake_onnx
from xinfer_sdk.converters import tensorrt_engine as te

from xinfer_sdk.accel.nvidia.engine_plan import make_build_plan, plan_hash
from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.errors import ConversionError, EnginePrecisionError
from xinfer_sdk.profiles import load_profile

INPUTS = [TensorSpec("x", "float32", (-1, 4))]


@pytest.fixture
def onnx(tmp_path):
    path = tmp_path / "model.onnx"
    write_fake_onnx(path, {"x": ["float32", [-1, 4]]}, {"y": ["float32", [-1, 4]]})
    return path


def typed_onnx(path, graph):
    """A fake ONNX whose tensors are ``graph`` typed (what the fp16/bf16 steps and Q/DQ produce)."""
    body = {"inputs": {"x": ["float32", [-1, 4]]}, "outputs": {"y": ["float32", [-1, 4]]}, "op": "double",
            "graph": graph}
    path.write_bytes(ONNX_MAGIC + json.dumps(body).encode())
    return path


def plan(profile="a10", precision="fp16", **kw):
    return make_build_plan(profile=load_profile(profile), precision=precision, inputs=INPUTS, max_batch_size=8, **kw)


def names(trt, what):
    return [c[1] for c in trt.calls if c[0] == what]


def test_unavailable_reason_says_what_is_missing(monkeypatch, trt, gpu):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    assert "TensorRT is not installed" in te.unavailable_reason() and "xinfer-sdk[tensorrt]" in te.unavailable_reason()
    trt()
    assert te.unavailable_reason() is None
    assert "does not exist (1 visible)" in te.unavailable_reason("cuda:1")
    gpu.devices.clear()
    assert "no CUDA device is visible" in te.unavailable_reason()
    for mod in ("cuda", "cuda.bindings", "cuda.bindings.runtime"):  # cuda-python not installed at all
        monkeypatch.setitem(sys.modules, mod, None)
    assert "cuda-python is not installed" in te.unavailable_reason()


def test_unavailable_reason_checks_tensorrt_supports_the_gpu(trt, gpu):
    trt("10.5.0")
    gpu.devices[:] = [("Tesla V100", 7, 0)]
    assert "removed in 10.5" in te.unavailable_reason()


def test_build_tensorrt_10_fp16_call_sequence(trt, gpu, onnx, tmp_path):
    mod = trt("10.3.0")
    p = plan("a10", "fp16")
    lines = []
    res = te.build_engine(onnx, p, tmp_path / "engines", log=lines.append)
    # the network is weakly typed (flags 0) and parsed from the file path (external weights resolve)
    assert names(mod, "create_network") == [0]
    assert names(mod, "parse_from_file") == [str(onnx)]
    assert ("set_memory_pool_limit", "WORKSPACE", p["workspace_bytes"]) in mod.calls
    assert names(mod, "set_flag") == ["FP16"]
    assert ("set_shape", "x", (1, 4), (8, 4), (8, 4)) in mod.calls
    order = [c[0] for c in mod.calls]
    assert order.index("set_shape") < order.index("create_timing_cache") < order.index("build_serialized_network")
    # result and files
    assert set(res) >= {"path", "key", "timing_cache", "seconds", "tensorrt_version", "compute_capability"}
    assert res["key"] == f"sm86_trt10.3.0_fp16_{plan_hash(p)[:8]}"
    assert res["path"].endswith(res["key"] + ".plan")
    assert res["tensorrt_version"] == "10.3.0" and res["compute_capability"] == "8.6"
    body = json.loads(Path(res["path"]).read_bytes()[len(MAGIC):])
    assert "FP16" in body["flags"] and body["profiles"] == [{"x": [[1, 4], [8, 4], [8, 4]]}]
    assert res["timing_cache"].endswith("timing_sm86_trt10.3.0.cache")
    # progress: a start line, TensorRT's phases, and the time at the end
    assert lines[0].startswith("TensorRT 10.3.0: building sm86_trt10.3.0_fp16_") and "batch 1..8..8" in lines[0]
    assert any("TensorRT phase: Building engine" in ln for ln in lines)
    assert lines[-1].startswith("TensorRT: built ") and lines[-1].endswith(" s")


def test_fp32_clears_tf32_and_int8_sets_int8_plus_fp16_on_10(trt, gpu, onnx, tmp_path):
    mod = trt("10.3.0")
    te.build_engine(onnx, plan("a10", "fp32"), tmp_path, log=lambda m: None)
    assert names(mod, "set_flag") == [] and names(mod, "clear_flag") == ["TF32"]
    mod = trt("10.3.0")
    te.build_engine(onnx, plan("a10", "int8"), tmp_path, log=lambda m: None)
    assert names(mod, "set_flag") == ["INT8", "FP16"]


def test_tensorrt_11_builds_strongly_typed_without_precision_flags(trt, gpu, tmp_path):
    mod = trt("11.4.0.106")
    p = plan("a10", "fp16")
    res = te.build_engine(typed_onnx(tmp_path / "fp16.onnx", "fp16"), p, tmp_path, log=lambda m: None)
    assert names(mod, "create_network") == [0]  # strongly typed is the only mode in 11
    assert names(mod, "set_flag") == []
    assert res["key"].startswith("sm86_trt11.4.0.106_fp16_")
    assert res["layer_precisions"]["verdict"] == "ok" and res["layer_precisions"]["flop_layers"] == {"fp16": 1}


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0.106"])
def test_fp8_builds_strongly_typed_without_precision_flags_on_10_and_11(trt, gpu, tmp_path, version):
    """FP8 from the E4M3 Q/DQ graph (converters/fp8.py): TensorRT 10 gets a STRONGLY_TYPED network too, and no
    BuilderFlag.FP8 (that flag only enables FP8 plugins)."""
    mod = trt(version)
    res = te.build_engine(typed_onnx(tmp_path / "fp8.onnx", "fp8"), plan("h100-sxm", "fp8", graph="fp8"), tmp_path,
                          log=lambda m: None)
    strongly = 1 << int(mod.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert names(mod, "create_network") == ([strongly] if version.startswith("10.") else [0])
    assert names(mod, "set_flag") == [] and names(mod, "clear_flag") == []
    assert "_fp8_" in res["key"]
    assert res["layer_precisions"]["verdict"] == "ok" and res["layer_precisions"]["flop_layers"] == {"fp8": 1}


def test_fp16_engine_from_an_fp32_graph_on_tensorrt_11_fails_and_is_not_kept(trt, gpu, onnx, tmp_path):
    # D2/D9: strongly typed TensorRT 11 builds an FP32 graph as FP32; the engine check refuses the "fp16" label
    trt("11.4.0.106")
    with pytest.raises(EnginePrecisionError) as exc:  # fails the build (converters/pipeline.py), not only the step
        te.build_engine(onnx, plan("a10", "fp16"), tmp_path / "out", log=lambda m: None)
    msg = str(exc.value)
    assert "requested fp16 precision did not happen" in msg and "no FLOP layer runs in FP16" in msg
    assert "fp32 1 (100%)" in msg and "not kept" in msg
    assert not list((tmp_path / "out").glob("*.plan"))


def test_engine_is_built_detailed_and_inspected_at_the_opt_shapes(trt, gpu, onnx, tmp_path):
    mod = trt("10.3.0")
    res = te.build_engine(onnx, plan("a10", "fp16"), tmp_path, log=lambda m: None)
    body = json.loads(Path(res["path"]).read_bytes()[len(MAGIC):])
    assert body["verbosity"] == "DETAILED"  # without it the inspector lists layer names only
    assert ("get_engine_information", "JSON") in mod.calls
    lp = res["layer_precisions"]
    assert lp["verdict"] == "ok" and lp["share"] == {"fp16": 1.0} and lp["requested"] == "fp16"
    # int8 on TensorRT 10: INT8 + FP16 flags on the Q/DQ graph
    res = te.build_engine(typed_onnx(tmp_path / "q.onnx", "int8"), plan("a10", "int8"), tmp_path / "i",
                          log=lambda m: None)
    assert res["layer_precisions"]["flop_layers"] == {"int8": 1}


def test_an_uninspectable_engine_is_kept_and_recorded_as_unverified(monkeypatch, trt, gpu, onnx, tmp_path, caplog):
    trt("10.3.0")
    monkeypatch.setattr(te.engine_check, "set_detailed_profiling", lambda trt, config: False)  # names only
    with caplog.at_level(logging.WARNING):
        res = te.build_engine(onnx, plan("a10", "fp16"), tmp_path, log=lambda m: None)
    assert res["layer_precisions"]["verdict"] == "unverified" and "names only" in res["layer_precisions"]["reason"]
    assert Path(res["path"]).is_file() and "not verified" in caplog.text


def test_a_plan_without_the_installed_major_is_derived_from_the_precision(trt, gpu, tmp_path):
    mod = trt("11.0.0")
    p = plan("t4", "int8")  # t4 lists TensorRT 10 only
    assert "11" not in p["per_major"]
    # would fail if it tried BuilderFlag.INT8 on 11
    te.build_engine(typed_onnx(tmp_path / "q.onnx", "int8"), p, tmp_path, log=lambda m: None)
    assert names(mod, "set_flag") == []


def test_parser_error_is_a_conversion_error(trt, gpu, tmp_path):
    trt("10.3.0")
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ConversionError) as exc:
        te.build_engine(bad, plan(), tmp_path / "out", log=lambda m: None)
    msg = str(exc.value)
    assert "cannot parse broken.onnx" in msg and "INVALID_GRAPH" in msg and "+1 more" in msg
    assert not list((tmp_path / "out").glob("*.plan"))


def test_failed_build_is_a_conversion_error(trt, gpu, onnx, tmp_path):
    trt("10.3.0", build_fails=True)
    with pytest.raises(ConversionError, match="failed to build the engine"):
        te.build_engine(onnx, plan(), tmp_path / "out", log=lambda m: None)
    assert not list((tmp_path / "out").glob("*.plan"))


def test_plan_for_an_input_the_graph_lacks_is_refused(trt, gpu, tmp_path):
    trt("10.3.0")
    other = tmp_path / "m.onnx"
    write_fake_onnx(other, {"images": ["float32", [-1, 4]]}, {"y": ["float32", [-1, 4]]})
    with pytest.raises(ConversionError, match="shapes for x but the ONNX graph's inputs are images"):
        te.build_engine(other, plan(), tmp_path, log=lambda m: None)


def test_dla_with_gpu_fallback_when_the_builder_has_dla(trt, gpu, onnx, tmp_path):
    gpu.devices[:] = [("Orin", 8, 7)]
    p = make_build_plan(profile=load_profile("jetson-agx-orin-64gb"), precision="fp16", inputs=INPUTS,
                        max_batch_size=1)  # DLA needs a static profile: 1..1..1
    mod = trt("10.3.0", dla_cores=2)
    res = te.build_engine(onnx, p, tmp_path / "a", log=lambda m: None)
    assert "GPU_FALLBACK" in names(mod, "set_flag") and res["dla"] is True
    assert json.loads(Path(res["path"]).read_bytes()[len(MAGIC):])["dla"] is True
    lines = []
    mod = trt("10.8.0", dla_cores=0)  # no DLA in this TensorRT: build for the GPU alone, and say so
    res = te.build_engine(onnx, p, tmp_path / "b", log=lines.append)
    assert res["dla"] is False and "GPU_FALLBACK" not in names(mod, "set_flag")
    assert any("no DLA core 0" in ln for ln in lines)


def test_ampere_plus_plan_refused_on_an_older_gpu(trt, gpu, onnx, tmp_path):
    import dataclasses

    prof = load_profile("a10")
    prof = dataclasses.replace(prof, tensorrt=dataclasses.replace(prof.tensorrt, hardware_compatibility="ampere+"))
    p = make_build_plan(profile=prof, precision="fp16", inputs=INPUTS, max_batch_size=8)
    trt("10.3.0")
    gpu.devices[:] = [("Tesla T4", 7, 5)]
    with pytest.raises(ConversionError, match="Ampere"):
        te.build_engine(onnx, p, tmp_path, log=lambda m: None)


def test_timing_cache_is_reused_and_a_bad_one_is_replaced(trt, gpu, onnx, tmp_path, caplog):
    out = tmp_path / "engines"
    mod = trt("10.3.0")
    first = te.build_engine(onnx, plan(), out, log=lambda m: None)
    saved = Path(first["timing_cache"]).read_bytes()
    mod = trt("10.3.0")
    te.build_engine(onnx, plan(precision="fp32"), out, log=lambda m: None)
    assert names(mod, "create_timing_cache")[0] == saved  # loaded from beside the engine
    with open(first["timing_cache"], "wb") as f:
        f.write(b"BAD cache from another GPU")
    mod = trt("10.3.0")
    with caplog.at_level(logging.WARNING):
        res = te.build_engine(onnx, plan(precision="int8"), out, log=lambda m: None)
    assert "not usable" in caplog.text
    assert names(mod, "create_timing_cache")[-1] == b""  # started over with an empty cache
    assert Path(res["timing_cache"]).read_bytes() == b"+"


def test_heartbeat_and_logger(monkeypatch, trt, gpu, onnx, tmp_path, caplog):
    mod = trt("10.3.0", has_progress_monitor=False)
    monkeypatch.setattr(te, "HEARTBEAT_S", 0.01)
    real = mod.Builder.build_serialized_network

    def slow(self, network, config):
        import time

        time.sleep(0.1)
        return real(self, network, config)

    monkeypatch.setattr(mod.Builder, "build_serialized_network", slow)
    lines = []
    te.build_engine(onnx, plan(), tmp_path, log=lines.append)
    assert any("still building" in ln for ln in lines)
    # TensorRT's own messages go to Python logging at the matching level
    logger = te.trt_logger(mod)
    sev = type("Severity", (), {"name": "ERROR"})()
    with caplog.at_level(logging.ERROR, logger="xinfer_sdk.converters.tensorrt_engine"):
        logger.log(sev, "out of memory")
    assert "TensorRT: out of memory" in caplog.text


def test_dla_is_never_claimed_for_a_dynamic_profile(trt, gpu, onnx, tmp_path):
    # D5: the plan turns DLA off for 1..8..8 and says why; the build log repeats it and never claims DLA
    gpu.devices[:] = [("Orin", 8, 7)]
    p = plan("jetson-agx-orin-64gb", "fp16")
    assert p["dla"]["enabled"] is False
    mod = trt("10.3.0", dla_cores=2)
    lines = []
    res = te.build_engine(onnx, p, tmp_path / "a", log=lines.append)
    assert res["dla"] is False and "GPU_FALLBACK" not in names(mod, "set_flag")
    assert any("DLA not used" in ln and "min = opt = max" in ln for ln in lines)
    assert not any("layers go to DLA" in ln for ln in lines)
    # a plan recorded by an older xinfer-sdk with DLA on a dynamic profile is built for the GPU too
    old = dict(p, dla={"enabled": True, "core": 0, "gpu_fallback": True})
    mod = trt("10.3.0", dla_cores=2)
    lines = []
    res = te.build_engine(onnx, old, tmp_path / "b", log=lines.append)
    assert res["dla"] is False and "GPU_FALLBACK" not in names(mod, "set_flag")
    assert any("x is dynamic" in ln for ln in lines)


def test_build_path_names_a_driver_too_old_for_cuda_python_13(trt, gpu, monkeypatch):
    """Review D3 on the build path: `build` says why no engine, not 'no CUDA device is visible'."""
    import enum

    from xinfer_sdk.accel.nvidia import _cudart

    E = enum.IntEnum("cudaError_t", {"cudaSuccess": 0, "cudaErrorInsufficientDriver": 35})
    gpu.cudaGetDeviceCount = lambda: (E.cudaErrorInsufficientDriver, None)
    gpu.cudaDriverGetVersion = lambda: (E.cudaSuccess, 12020)
    gpu.cudaRuntimeGetVersion = lambda: (E.cudaSuccess, 13050)
    monkeypatch.setattr(_cudart, "bindings_version", lambda: None)
    trt("10.3.0")
    why = te.unavailable_reason(0)
    assert "driver too old for cuda-python 13.x" in why and "(cudaErrorInsufficientDriver)" in why
    assert "no CUDA device is visible" not in why
