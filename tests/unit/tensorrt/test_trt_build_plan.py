"""The TensorRT build plan: optimization profiles, flags per TensorRT major, DLA, hardware compatibility."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from xinfer_sdk.accel.nvidia.engine_plan import (
    dla_config,
    flags_for_major,
    make_build_plan,
    opt_batch_size,
    plan_hash,
    profile_ranges,
    settings_for,
)
from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.errors import UserError
from xinfer_sdk.profiles import load_profile
from xinfer_sdk.shapes import parse_shapes

IMAGE = [TensorSpec("images", "float32", (-1, 3, 224, 224), ("batch", None, None, None))]
TOKENS = [TensorSpec("input_ids", "int64", (-1, -1), ("batch", "seq")),
          TensorSpec("attention_mask", "int64", (-1, -1), ("batch", "seq"))]


def with_trt(profile, **changes):
    return dataclasses.replace(profile, tensorrt=dataclasses.replace(profile.tensorrt, **changes))


@pytest.mark.parametrize("max_bs, preferred, want", [(32, (8, 16, 32), 32), (16, (8, 16, 32), 16),
                                                      (12, (8, 16, 32), 8), (12, (), 12), (4, (8,), 4)])
def test_opt_batch_is_largest_preferred_that_fits(max_bs, preferred, want):
    assert opt_batch_size(max_bs, preferred) == want


def test_cnn_profile_comes_from_the_batch_policy():
    plan = make_build_plan(profile=load_profile("t4"), precision="fp16", inputs=IMAGE, max_batch_size=16)
    assert plan["profiles"] == [{"images": {"min": [1, 3, 224, 224], "opt": [16, 3, 224, 224],
                                            "max": [16, 3, 224, 224]}}]
    assert plan["batch"] == {"min": 1, "opt": 16, "max": 16}
    assert plan["workspace_bytes"] == 2 * (1 << 30)  # t4.yaml: memory.workspace_gb 2.0
    assert plan["builder_optimization_level"] == 3


def test_transformer_seq_axis_from_shapes_and_batch_from_policy():
    shapes = parse_shapes("input_ids:1x8..4x128..64x512,attention_mask:1x8..4x128..64x512")
    plan = make_build_plan(profile=load_profile("a10"), precision="fp16", inputs=TOKENS, max_batch_size=32,
                           shapes=shapes)
    # batch axis: 1 / largest preferred (a10 inherits 16, 32, 64 -> 32 fits) / max_batch_size; seq: --shapes
    want = {"min": [1, 8], "opt": [32, 128], "max": [32, 512]}
    assert plan["profiles"][0] == {"input_ids": want, "attention_mask": want}


def test_dynamic_seq_axis_without_shapes_is_a_clear_error():
    with pytest.raises(UserError) as exc:
        make_build_plan(profile=load_profile("t4"), precision="fp16", inputs=TOKENS, max_batch_size=32)
    msg = str(exc.value)
    assert "'input_ids'" in msg and "axis 1 (seq)" in msg
    assert "--shapes input_ids:1x1..32x128..32x512" in msg  # an example in the real syntax, with real numbers
    # and the example parses
    assert parse_shapes("input_ids:1x1..32x128..32x512")["input_ids"].max == (32, 512)


@pytest.mark.parametrize("text, words", [
    ("input_ids:1x8x1..4x128x1..8x512x1", "rank 3"),
    ("nope:1x8..4x128..8x512", "no input 'nope'"),
])
def test_bad_shapes_name_the_problem(text, words):
    with pytest.raises(UserError, match=words):
        profile_ranges(TOKENS, max_batch_size=8, opt_batch=8, shapes=parse_shapes(text))


def test_fixed_axis_must_agree_with_shapes():
    specs = [TensorSpec("x", "float32", (-1, 3, -1))]
    with pytest.raises(UserError, match="axis 1 is fixed at 3"):
        profile_ranges(specs, max_batch_size=8, opt_batch=8, shapes=parse_shapes("x:1x4x8..2x4x16..8x4x32"))
    ok = profile_ranges(specs, max_batch_size=8, opt_batch=4, shapes=parse_shapes("x:1x3x8..2x3x16..8x3x32"))
    assert ok == {"x": {"min": [1, 3, 8], "opt": [4, 3, 16], "max": [8, 3, 32]}}


def test_static_inputs_need_no_profile_and_unbatched_models_use_shapes():
    static = [TensorSpec("lut", "float32", (256,))]
    assert profile_ranges(static, max_batch_size=8, opt_batch=8) == {}
    unbatched = [TensorSpec("audio", "float32", (-1,))]
    got = profile_ranges(unbatched, max_batch_size=0, opt_batch=0, shapes=parse_shapes("audio:160..16000..48000"))
    assert got == {"audio": {"min": [160], "opt": [16000], "max": [48000]}}


def test_flags_for_tensorrt_10_come_from_the_precision():
    assert flags_for_major("fp16", 10)["set_flags"] == ["FP16"]
    int8 = flags_for_major("int8", 10)
    assert int8["set_flags"] == ["INT8", "FP16"] and "Q/DQ" in int8["note"]
    assert flags_for_major("int8", 10, fp16_fallback=False)["set_flags"] == ["INT8"]
    fp32 = flags_for_major("fp32", 10)
    assert fp32["set_flags"] == [] and fp32["clear_flags"] == ["TF32"]  # FP32 stays FP32
    assert all(flags_for_major(p, 10)["network"] == "weakly_typed" for p in ("fp32", "fp16", "int8"))


def test_tensorrt_11_is_strongly_typed_without_precision_flags():
    for precision in ("fp32", "fp16", "int8"):
        f = flags_for_major(precision, 11)
        assert f["network"] == "strongly_typed"
        assert f["set_flags"] == []
        assert not {"FP16", "INT8", "BF16"} & set(f["clear_flags"])


def test_tensorrt_8_is_not_built_by_us():
    f = flags_for_major("fp16", 8)
    assert f["supported"] is False and "trtexec" in f["note"]


def test_plan_records_each_major_of_the_profile():
    l4 = make_build_plan(profile=load_profile("l4"), precision="int8", inputs=IMAGE, max_batch_size=8)
    assert set(l4["per_major"]) == {"10", "11"}
    assert l4["per_major"]["10"]["set_flags"] == ["INT8", "FP16"]
    assert l4["per_major"]["11"]["set_flags"] == []
    t4 = make_build_plan(profile=load_profile("t4"), precision="int8", inputs=IMAGE, max_batch_size=8)
    assert set(t4["per_major"]) == {"10"}
    # a TensorRT major the profile did not list is derived from the precision, not refused
    assert settings_for(t4, 11)["network"] == "strongly_typed"


def test_dla_with_gpu_fallback_on_jetson_only():
    orin = load_profile("jetson-agx-orin-64gb")
    on = dla_config(orin, "fp16")
    assert on["enabled"] is True and on["core"] == 0 and on["gpu_fallback"] is True
    assert dla_config(orin, "int8")["enabled"] is True
    assert "FP16 and INT8 only" in dla_config(orin, "fp32")["reason"]
    nano = load_profile("jetson-orin-nano-8gb")  # no DLA on the Nano
    assert dla_config(with_trt(nano, use_dla=True), "fp16") == {"enabled": False,
                                                                "reason": "NVIDIA Jetson Orin Nano 8GB has no DLA cores"}
    a100 = with_trt(load_profile("a100-sxm4-80gb"), use_dla=True)  # a data-center GPU asking for DLA gets none
    assert dla_config(a100, "fp16")["enabled"] is False
    assert dla_config(load_profile("t4"), "fp16")["enabled"] is False
    plan = make_build_plan(profile=orin, precision="fp16", inputs=IMAGE, max_batch_size=1)  # 1..1..1: static
    assert plan["dla"]["enabled"] is True and plan["dla"]["static"] is True


def test_dla_is_off_for_a_dynamic_profile_and_the_plan_says_why():
    # D5: DLA needs min = opt = max; with GPU fallback a dynamic profile silently ran everything on the GPU
    orin = load_profile("jetson-agx-orin-64gb")
    plan = make_build_plan(profile=orin, precision="fp16", inputs=IMAGE, max_batch_size=16)
    assert plan["dla"]["enabled"] is False and plan["dla"]["requested"] is True
    assert "min = opt = max" in plan["dla"]["reason"] and "images 1x3x224x224..16x3x224x224..16x3x224x224" in \
        plan["dla"]["reason"]
    assert "--max-batch-size 1" in plan["dla"]["reason"]
    nx = make_build_plan(profile=load_profile("jetson-orin-nx-16gb"), precision="int8", inputs=IMAGE, max_batch_size=8)
    assert nx["dla"]["enabled"] is False
    # an unbatched model with fixed shapes is static: DLA stays on
    fixed = [TensorSpec("images", "float32", (1, 3, 224, 224))]
    assert make_build_plan(profile=orin, precision="fp16", inputs=fixed, max_batch_size=0)["dla"]["enabled"] is True
    assert "10.7" not in json.dumps(plan)  # D15: the stale "10.7 was the last release with DLA" note is gone


def test_ampere_plus_refused_for_t4_and_jetson_accepted_for_a10():
    with pytest.raises(UserError, match=r"ampere\+ needs compute capability 8.0.*sm_75.*7.5"):
        make_build_plan(profile=with_trt(load_profile("t4"), hardware_compatibility="ampere+"), precision="fp16",
                        inputs=IMAGE, max_batch_size=8)
    with pytest.raises(UserError, match="not supported on JetPack"):
        make_build_plan(profile=with_trt(load_profile("jetson-agx-orin-64gb"), hardware_compatibility="ampere+"),
                        precision="fp16", inputs=IMAGE, max_batch_size=8)
    plan = make_build_plan(profile=with_trt(load_profile("a10"), hardware_compatibility="ampere+"),
                           precision="fp16", inputs=IMAGE, max_batch_size=8)
    assert plan["hardware_compatibility"] == "ampere+"


def test_unsupported_precision_is_refused_with_the_reason():
    with pytest.raises(UserError, match="has no FP8"):
        make_build_plan(profile=load_profile("t4"), precision="fp8", inputs=IMAGE, max_batch_size=8)
    fp8 = make_build_plan(profile=load_profile("h100-sxm"), precision="fp8", inputs=IMAGE, max_batch_size=8,
                          graph="fp8")
    for major in ("10", "11"):  # FP8 from the E4M3 Q/DQ nodes, strongly typed, no precision flag (BuilderFlag.FP8
        assert fp8["per_major"][major] == {  # is for plugins on 10 and gone in 11)
            "supported": True, "network": "strongly_typed", "set_flags": [], "clear_flags": [],
            "note": fp8["per_major"][major]["note"]}
    not_fp8 = make_build_plan(profile=load_profile("h100-sxm"), precision="fp8", inputs=IMAGE, max_batch_size=8,
                              graph="fp32")
    assert not not_fp8["per_major"]["10"]["supported"] and "FP8 Q/DQ nodes" in not_fp8["per_major"]["11"]["note"]
    assert make_build_plan(profile=load_profile("t4"), precision="auto", inputs=IMAGE,
                           max_batch_size=8)["precision"] == "fp16"


def test_plan_is_json_and_yaml_and_its_hash_tracks_what_shapes_the_engine():
    prof = load_profile("a10")
    plan = make_build_plan(profile=prof, precision="fp16", inputs=IMAGE, max_batch_size=8)
    assert json.loads(json.dumps(plan)) == plan
    assert yaml.safe_load(yaml.safe_dump(plan)) == plan
    assert plan["hash"] == plan_hash(plan) and len(plan["hash"]) == 16
    same = make_build_plan(profile=prof, precision="fp16", inputs=IMAGE, max_batch_size=8)
    assert same["hash"] == plan["hash"]
    for other in (make_build_plan(profile=prof, precision="fp16", inputs=IMAGE, max_batch_size=16),
                  make_build_plan(profile=prof, precision="int8", inputs=IMAGE, max_batch_size=8),
                  make_build_plan(profile=with_trt(prof, builder_optimization_level=5), precision="fp16",
                                  inputs=IMAGE, max_batch_size=8)):
        assert other["hash"] != plan["hash"]
    # D15: the recorded settings per TensorRT major are part of the hash (a plan whose flags changed must not
    # reuse an engine named for the old flags); listing another major costs a rebuild, never a wrong engine
    only10 = make_build_plan(profile=with_trt(prof, versions=(10,)), precision="fp16", inputs=IMAGE,
                             max_batch_size=8)
    assert only10["hash"] != plan["hash"]
    edited = json.loads(json.dumps(plan))
    edited["per_major"]["10"]["set_flags"] = []
    assert plan_hash(edited) != plan["hash"]


def test_plan_hash_includes_the_int8_fp16_fallback():
    # D15: two plans that differ only in the INT8+FP16 fallback used to share an engine file name
    prof = load_profile("l4")
    with_fb = make_build_plan(profile=prof, precision="int8", inputs=IMAGE, max_batch_size=8)
    no_fp16 = dataclasses.replace(prof, precisions=tuple(p for p in prof.precisions if p != "fp16"))
    without = make_build_plan(profile=no_fp16, precision="int8", inputs=IMAGE, max_batch_size=8)
    assert with_fb["fp16_fallback"] is True and without["fp16_fallback"] is False
    assert with_fb["hash"] != without["hash"]
    # the fallback alone changes the hash, even with per_major recorded identically
    flipped = dict(with_fb, fp16_fallback=False)
    assert plan_hash(flipped) != with_fb["hash"]


def test_bf16_on_tensorrt_11_needs_the_bf16_graph():
    # D2: TensorRT 11 removed BuilderFlag.BF16; an FP32 graph would build an FP32 engine named bf16
    h200 = load_profile("h200")
    plan = make_build_plan(profile=h200, precision="bf16", inputs=IMAGE, max_batch_size=8, graph="bf16")
    assert plan["graph"] == "bf16"
    assert plan["per_major"]["11"]["supported"] is True and plan["per_major"]["11"]["set_flags"] == []
    assert plan["per_major"]["10"]["set_flags"] == ["BF16"]
    legacy = make_build_plan(profile=h200, precision="bf16", inputs=IMAGE, max_batch_size=8, graph="fp32")
    eleven = legacy["per_major"]["11"]
    assert eleven["supported"] is False and "strongly typed" in eleven["note"] and "FP32" in eleven["note"]
    assert legacy["per_major"]["10"]["supported"] is True  # TensorRT 10 still has the BF16 flag
    # the same for fp16, and an fp32 engine from an fp32 graph is fine
    assert flags_for_major("fp16", 11, graph="fp32")["supported"] is False
    assert flags_for_major("fp32", 11, graph="fp32")["supported"] is True
    assert flags_for_major("int8", 11, graph="int8")["supported"] is True
    no_qdq = flags_for_major("int8", 11, graph="fp32")  # INT8 on 11 comes only from Q/DQ nodes
    assert no_qdq["supported"] is False and "Q/DQ nodes" in no_qdq["note"]
    # a plan without the graph recorded (older bundles) is derived as before; the engine check catches it
    assert settings_for({"precision": "bf16"}, 11)["supported"] is True


def test_inputs_may_be_manifest_dicts():
    dicts = [t.to_dict() for t in TOKENS]
    plan = make_build_plan(profile=load_profile("a10"), precision="fp32", inputs=dicts, max_batch_size=4,
                           shapes=parse_shapes("input_ids:1x16..2x64..4x128,attention_mask:1x16..2x64..4x128"))
    assert plan["profiles"][0]["input_ids"]["max"] == [4, 128]
