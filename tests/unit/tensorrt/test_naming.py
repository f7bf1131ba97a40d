"""Engine keys and file names, 'does this plan fit this GPU / TensorRT', runtime helpers, ORT TRT EP options."""

from __future__ import annotations

import dataclasses

import pytest

from xinfer_sdk.accel.nvidia.engine_plan import (
    EngineKey,
    check_feed_shapes,
    engine_key,
    grow_bytes,
    make_build_plan,
    matching_engines,
    normalize_trt_version,
    ort_precision_gap,
    ort_trt_provider_options,
    parse_device,
    timing_cache_name,
    trt_supports_gpu,
    user_engine_dir,
)
from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.errors import InvalidInput, UserError
from xinfer_sdk.profiles import load_profile
from xinfer_sdk.shapes import parse_shapes

IMAGE = [TensorSpec("images", "float32", (-1, 3, 32, 32))]


def plan_for(profile="a10", precision="fp16", **trt):
    prof = load_profile(profile)
    if trt:
        prof = dataclasses.replace(prof, tensorrt=dataclasses.replace(prof.tensorrt, **trt))
    return make_build_plan(profile=prof, precision=precision, inputs=IMAGE, max_batch_size=8)


def test_engine_file_name_is_keyed_by_gpu_tensorrt_precision_and_plan():
    plan = plan_for()
    key = engine_key(plan, "8.6", "10.3.0")
    assert key.filename == f"sm86_trt10.3.0_fp16_{plan['hash'][:8]}.plan"
    assert EngineKey.parse(key.filename) == key
    assert EngineKey.parse(key.stem) == key
    assert engine_key(plan, "8.6", "10.7.0.post1").trt_version == "10.7.0"
    hw = plan_for(hardware_compatibility="ampere+")
    assert engine_key(hw, "8.6", "10.3.0").filename.startswith("sm80+_trt10.3.0_fp16_")


@pytest.mark.parametrize("name", ["model.onnx", "sm86_trt10.3.0_fp16.plan", "sm86_trt10_fp16_XYZ12345.plan",
                                  "timing_sm86_trt10.3.0.cache", "gpu_trt10.3.0_fp16_0123abcd.plan"])
def test_foreign_names_are_not_keys(name):
    assert EngineKey.parse(name) is None


def test_runs_on_needs_the_same_gpu_and_exact_tensorrt():
    key = EngineKey.parse("sm86_trt10.3.0_fp16_0123abcd.plan")
    assert key.runs_on("8.6", "10.3.0")
    assert not key.runs_on("8.9", "10.3.0")  # another architecture
    assert not key.runs_on("8.6", "10.3.1")  # plans do not load across TensorRT versions
    compat = EngineKey.parse("sm80+_trt10.3.0_fp16_0123abcd.plan")
    assert compat.runs_on("8.0", "10.3.0") and compat.runs_on("9.0", "10.3.0")
    assert not compat.runs_on("7.5", "10.3.0")


def test_matching_engines_filters_by_plan_and_prefers_the_exact_gpu():
    plan = plan_for()
    h = plan["hash"][:8]
    names = [f"engines/sm80+_trt10.3.0_fp16_{h}.plan", f"engines/sm86_trt10.3.0_fp16_{h}.plan",
             f"engines/sm86_trt10.3.0_int8_{h}.plan", "engines/sm86_trt10.3.0_fp16_deadbeef.plan",
             f"engines/sm75_trt10.3.0_fp16_{h}.plan", f"engines/sm86_trt10.4.0_fp16_{h}.plan", "model.onnx"]
    assert matching_engines(names, plan, "8.6", "10.3.0") == [names[1], names[0]]
    assert matching_engines(names, plan, "7.5", "10.3.0") == [names[4]]
    assert matching_engines(names, plan, "8.9", "10.5.0") == []


def test_timing_cache_and_versions():
    assert timing_cache_name("8.7", "10.3.0.30") == "timing_sm87_trt10.3.0.30.cache"
    assert normalize_trt_version(" 11.4.0.106 ") == "11.4.0.106"
    with pytest.raises(ValueError):
        normalize_trt_version("unknown")


@pytest.mark.parametrize("cc, ver, words", [
    ("7.0", "10.5.0", "removed in 10.5"), ("6.1", "10.3.0", "7.0 or newer"), ("8.6", "8.6.1", "TensorRT 10 or 11"),
])
def test_tensorrt_gpu_support(cc, ver, words):
    assert words in trt_supports_gpu(cc, ver)


@pytest.mark.parametrize("cc, ver", [("7.0", "10.4.0"), ("7.5", "10.3.0"), ("8.7", "10.3.0"), ("9.0", "11.4.0")])
def test_tensorrt_gpu_supported(cc, ver):
    assert trt_supports_gpu(cc, ver) is None


def test_parse_device():
    assert parse_device("cuda") == 0 and parse_device("cuda:1") == 1 and parse_device("GPU:2") == 2
    for bad in ("cpu", "cuda:x", "tpu:0"):
        with pytest.raises(UserError):
            parse_device(bad)


def test_feed_outside_the_profile_is_refused_with_the_range():
    ranges = {"x": {"min": [1, 8], "opt": [4, 64], "max": [8, 128]}}
    check_feed_shapes({"x": (8, 128)}, ranges)
    check_feed_shapes({"other": (99,)}, ranges)  # inputs with static shapes have no range
    with pytest.raises(InvalidInput, match=r"shape \[9, 16\].*1x8 \.\. 8x128"):
        check_feed_shapes({"x": (9, 16)}, ranges)
    with pytest.raises(InvalidInput):
        check_feed_shapes({"x": (2, 4)}, ranges)
    with pytest.raises(InvalidInput):
        check_feed_shapes({"x": (2,)}, ranges)


def test_grow_bytes_reuses_then_doubles():
    assert grow_bytes(100, 0) == 256
    assert grow_bytes(200, 256) == 256
    assert grow_bytes(300, 256) == 512
    assert grow_bytes(5000, 256) == 5000


def test_user_engine_dir(tmp_path):
    sha = "ab" * 32
    assert user_engine_dir(sha, {"XINFER_CACHE_DIR": str(tmp_path)}) == str(tmp_path / "engines" / ("ab" * 8))
    xdg = user_engine_dir(sha, {"XDG_CACHE_HOME": "/x"})
    assert xdg == "/x/xinfer-sdk/engines/" + "ab" * 8


# -- ONNX Runtime TensorRT execution provider -------------------------------------------------------------
def test_ort_options_for_fp16_on_tensorrt_10(tmp_path):
    plan = plan_for("a10", "fp16")
    o = ort_trt_provider_options(plan, str(tmp_path), device_id=1)
    assert o["device_id"] == "1"
    assert o["trt_fp16_enable"] == "True" and o["trt_int8_enable"] == "False"
    assert o["trt_engine_cache_enable"] == "True" and o["trt_engine_cache_path"] == str(tmp_path)
    assert o["trt_timing_cache_enable"] == "True" and o["trt_timing_cache_path"] == str(tmp_path)
    assert o["trt_max_workspace_size"] == str(int(load_profile("a10").memory.workspace_gb * (1 << 30)))
    assert o["trt_builder_optimization_level"] == "3"
    assert o["trt_profile_min_shapes"] == "images:1x3x32x32"
    assert o["trt_profile_opt_shapes"] == "images:8x3x32x32"
    assert o["trt_profile_max_shapes"] == "images:8x3x32x32"
    assert "trt_dla_enable" not in o and "trt_engine_hw_compatible" not in o
    assert all(isinstance(v, str) for v in o.values())


def test_ort_options_int8_uses_qdq_and_tensorrt_11_uses_graph_types(tmp_path):
    plan = plan_for("l4", "int8")
    o10 = ort_trt_provider_options(plan, str(tmp_path))
    assert o10["trt_int8_enable"] == "True" and o10["trt_fp16_enable"] == "True"
    assert not any("calibration" in k for k in o10)  # explicit Q/DQ: no calibration table
    o11 = ort_trt_provider_options(plan, str(tmp_path), trt_major=11)
    assert o11["trt_int8_enable"] == "False" and o11["trt_fp16_enable"] == "False"


def test_ort_options_dla_and_hardware_compatibility(tmp_path):
    # D5: ORT's trt_dla_enable only for a static plan (DLA needs min = opt = max), never for 1..8..8
    assert "trt_dla_enable" not in ort_trt_provider_options(plan_for("jetson-agx-orin-64gb", "fp16"), str(tmp_path))
    static = make_build_plan(profile=load_profile("jetson-agx-orin-64gb"), precision="fp16", inputs=IMAGE,
                             max_batch_size=1)
    o = ort_trt_provider_options(static, str(tmp_path))
    assert o["trt_dla_enable"] == "True" and o["trt_dla_core"] == "0"
    assert o["trt_profile_min_shapes"] == o["trt_profile_max_shapes"] == "images:1x3x32x32"
    o = ort_trt_provider_options(plan_for("a10", "fp16", hardware_compatibility="ampere+"), str(tmp_path))
    assert o["trt_engine_hw_compatible"] == "True"


def test_ort_profile_strings_for_several_dynamic_inputs(tmp_path):
    tokens = [TensorSpec("input_ids", "int64", (-1, -1)), TensorSpec("attention_mask", "int64", (-1, -1)),
              TensorSpec("scale", "float32", (1,))]
    plan = make_build_plan(profile=load_profile("a10"), precision="fp16", inputs=tokens, max_batch_size=4,
                           shapes=parse_shapes("input_ids:1x8..2x64..4x128,attention_mask:1x8..2x64..4x128"))
    o = ort_trt_provider_options(plan, str(tmp_path))
    assert o["trt_profile_min_shapes"] == "input_ids:1x8,attention_mask:1x8"
    assert o["trt_profile_opt_shapes"] == "input_ids:4x64,attention_mask:4x64"
    assert o["trt_profile_max_shapes"] == "input_ids:4x128,attention_mask:4x128"


def test_ort_bf16_option_only_where_onnxruntime_has_it(tmp_path):
    # D2: trt_bf16_enable exists from onnxruntime 1.23 (PR #24743, after 1.22.0); older releases reject the key
    plan = plan_for("h200", "bf16")
    assert ort_trt_provider_options(plan, str(tmp_path), ort_version="1.23.0")["trt_bf16_enable"] == "True"
    assert ort_trt_provider_options(plan, str(tmp_path), ort_version="1.31.1")["trt_bf16_enable"] == "True"
    old = ort_trt_provider_options(plan, str(tmp_path), ort_version="1.22.0")
    assert "trt_bf16_enable" not in old and old["trt_fp16_enable"] == "False"
    assert "trt_bf16_enable" not in ort_trt_provider_options(plan, str(tmp_path), ort_version="garbage")
    # on TensorRT 11 the BF16 graph carries the precision: no flag at all
    assert "trt_bf16_enable" not in ort_trt_provider_options(plan, str(tmp_path), ort_version="1.31.1", trt_major=11)
    # fp16 plans never get the bf16 key
    assert "trt_bf16_enable" not in ort_trt_provider_options(plan_for("h200", "fp16"), str(tmp_path),
                                                             ort_version="1.31.1")
    assert "1.23" in ort_precision_gap(plan, ort_version="1.22.0")
    assert ort_precision_gap(plan, ort_version="1.23.2") is None
    assert ort_precision_gap(plan_for("h200", "fp16"), ort_version="1.20.0") is None


def test_ort_bf16_default_version_is_the_imported_onnxruntime(monkeypatch, tmp_path):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "onnxruntime", types.SimpleNamespace(__version__="1.24.4"))
    assert ort_trt_provider_options(plan_for("h200", "bf16"), str(tmp_path))["trt_bf16_enable"] == "True"
    monkeypatch.setitem(sys.modules, "onnxruntime", types.SimpleNamespace(__version__="1.20.1"))
    assert "trt_bf16_enable" not in ort_trt_provider_options(plan_for("h200", "bf16"), str(tmp_path))
