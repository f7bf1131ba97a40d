"""The GPU device model as TensorRT runs a graph: kernel plan (fusion), activation bytes at the compute precision,
L2 residency, tensor-core tile efficiency, fitted factors with provenance, and planning every shipped profile."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from xinfer_sdk.errors import ProfileError  # noqa: E402
from xinfer_sdk.graph import analyze  # noqa: E402
from xinfer_sdk.planning import plan  # noqa: E402
from xinfer_sdk.planning.cost import build_curve  # noqa: E402
from xinfer_sdk.planning.device import batch_time, device_model, gpu_model  # noqa: E402
from xinfer_sdk.planning.factors import (  # noqa: E402
    PRIORS,
    boost_clock,
    gap_scale,
    gpu_factors,
    load,
    planning_family,
    power_group,
    power_reference,
    power_term,
    reference_clock_mhz,
    sm_ghz,
    watts_per_sm_ghz,
)
from xinfer_sdk.planning.gpu import kernel_count, kernel_terms, shape_efficiency, spill  # noqa: E402
from xinfer_sdk.profiles import ProfileRegistry, load_profile  # noqa: E402

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _w(name, *shape):
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def resblock(c=64, hw=56):
    """conv -> relu -> conv -> add(x) -> relu -> LayerNorm-like chain (ReduceMean, Sub, Mul) -> conv."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Add", ["c2", "x"], ["a"]),
             helper.make_node("Relu", ["a"], ["r2"]),
             helper.make_node("ReduceMean", ["r2"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Sub", ["r2", "m"], ["d"]),
             helper.make_node("Mul", ["d", "d"], ["sq"]),
             helper.make_node("Conv", ["sq", "w3"], ["y"], kernel_shape=[1, 1])]
    return _model(nodes, [helper.make_tensor_value_info("x", F, ["N", c, hw, hw])],
                  [helper.make_tensor_value_info("y", F, None)],
                  [_w("w1", c, c, 3, 3), _w("b1", c), _w("w2", c, c, 3, 3), _w("b2", c), _w("w3", c, c, 1, 1)])


def attention(seq=128, heads=4, d=32):
    """Q, K, V inputs [N, H, S, D] -> MatMul(Q, K^T) / sqrt(d) -> Softmax -> MatMul(., V)."""
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Div", ["s", "scale"], ["ss"]),
             helper.make_node("Softmax", ["ss"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    ins = [helper.make_tensor_value_info(n, F, ["N", heads, seq, d]) for n in ("q", "k", "v")]
    return _model(nodes, ins, [helper.make_tensor_value_info("y", F, None)],
                  [numpy_helper.from_array(np.array(d ** 0.5, np.float32), "scale")])


# ---- the kernel plan --------------------------------------------------------------------------------------------
def test_epilogues_and_pointwise_chains_are_one_kernel_each():
    c = analyze(resblock(), batch_size=1)
    k = {o.name.split("_")[0] + "_" + o.name.split("_")[1]: o.kernel for o in c.ops}
    conv1, relu1, conv2, add, relu2, mean, sub, mul, conv3 = (o.kernel for o in c.ops)
    assert relu1 == conv1 and add == relu2 == conv2  # bias/ReLU and the residual add in the conv epilogue
    assert mean == sub == mul != conv2  # the reduction chain is one point-wise kernel of its own
    assert conv3 not in (conv1, conv2, mean)
    assert len({o.kernel for o in c.ops}) == 4 and k
    edges = {e.name: e for e in c.edges}
    assert "c1" not in edges and "a" not in edges  # never leave their kernel
    assert edges["r1"].producer == conv1 and edges["r1"].consumers == (conv2,)
    assert edges["x"].producer == -1 and set(edges["x"].consumers) == {conv1, conv2}  # read by conv1 and the add
    assert edges["r2"].consumers == (mean,)  # read once by the chain, not once per op
    assert c.ops[0].gemm == (56 * 56, 64, 64 * 9, 1, 9)


def test_attention_pattern_is_marked_and_fuses_on_gpus_that_have_it():
    c = analyze(attention(), batch_size=1)
    mm1 = next(k for k, o in enumerate(c.ops) if o.op_type == "MatMul")
    assert [o.attention for o in c.ops if o.op_class != "data"] == [mm1] * 4
    curve = build_curve(attention(), precision="fp16")
    t4 = gpu_model(load_profile("t4"), "fp16")
    xavier = gpu_model(load_profile("jetson-agx-xavier"), "fp16")
    assert t4.fused_attention and "sm_75" in t4.attention_basis
    assert not xavier.fused_attention and "sm_72" in xavier.attention_basis
    assert kernel_count(t4, curve) == 1 and kernel_count(xavier, curve) == 3
    fused, unfused = kernel_terms(t4, curve, 8), kernel_terms(xavier, curve, 8)
    scores = 8 * 4 * 128 * 128 * 2  # the S x S scores at FP16
    assert unfused.dram(0.0).sum() - fused.dram(0.0).sum() == pytest.approx(4 * scores)  # written + read twice


def test_qdq_nodes_and_views_run_nowhere():
    wq = numpy_helper.from_array(np.ones((16, 8), np.int8), "wq")
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(0, np.int8), "zp")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "s", "zp"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["h"]),
             helper.make_node("Reshape", ["h", "shape"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, ["N", 16])], [helper.make_tensor_value_info("y", F, None)],
               [wq, s, zp, numpy_helper.from_array(np.array([-1, 8], np.int64), "shape")])
    c = analyze(m, batch_size=2)
    assert [o.kernel >= 0 for o in c.ops] == [False, False, False, True, False]
    out = next(e for e in c.edges if e.producer >= 0)
    assert out.consumers == (-1,) and out.elements == 16  # the reshape aliases the MatMul's output


# ---- pricing ---------------------------------------------------------------------------------------------------
def test_activations_cross_kernels_at_the_compute_precision():
    int8 = build_curve(resblock(), precision="int8")
    fp16 = build_curve(resblock(), precision="fp16")
    t4_8, t4_16 = gpu_model(load_profile("t4"), "int8"), gpu_model(load_profile("t4"), "fp16")
    a8, a16 = kernel_terms(t4_8, int8, 16), kernel_terms(t4_16, fp16, 16)
    assert a16.edge_bytes.sum() == pytest.approx(2 * a8.edge_bytes.sum())
    r1 = 16 * 64 * 56 * 56
    assert r1 in a8.edge_bytes  # written once, read once, 1 byte per element
    assert a8.dram_bytes.sum() > 16 * 64 * 56 * 56 * 4  # the FP32 graph input is read as stored


def test_tensors_that_fit_the_l2_share_stay_on_chip():
    curve = build_curve(resblock(), precision="int8")
    l4 = gpu_model(load_profile("l4"), "int8")
    assert l4.l2_bytes == 48 * 2**20 and "l2_cache_mb" in l4.l2_basis
    no_l2 = dataclasses.replace(l4, l2_bytes=None)
    small = kernel_terms(l4, curve, 1)
    share = l4.l2_bytes * l4.l2_fraction.value
    # 200 kB tensors and 75 kB of weights stay on chip; without an L2 everything goes to DRAM
    assert small.dram(share).sum() == pytest.approx(small.dram_bytes.sum(), rel=1e-6)
    assert small.dram(0.0).sum() == pytest.approx(small.dram_bytes.sum() + small.edge_bytes.sum()
                                                  + small.weight_bytes.sum())
    assert small.weight_bytes.sum() == 64 * 64 * (9 + 9 + 1) + 2 * 64  # conv inputs (weights, biases) at INT8
    big = kernel_terms(l4, curve, 1024)  # 205 MB per tensor: far beyond the L2
    assert big.dram(share).sum() == pytest.approx(big.dram(0.0).sum(), rel=1e-2)
    assert batch_time(no_l2, curve, 1).memory_s + batch_time(no_l2, curve, 1).compute_s \
        > batch_time(l4, curve, 1).memory_s + batch_time(l4, curve, 1).compute_s
    assert spill(np.array([1e3, 1e6, 1e9]), 1e6).round(3).tolist() == [0.0, 0.5, 1.0]
    assert spill(np.array([5.0]), 0.0).tolist() == [1.0]


def test_tile_efficiency_by_layer_shape():
    rows = np.array([[12544, 64, 3 * 49, 1, 49],  # ResNet's first conv: 3 channels pad to 4
                     [3136, 64, 48 * 9, 1, 9],  # 48 channels pad to the INT8 K step of 32 -> 64
                     [1, 1000, 2048, 1, 1],  # batch-1 fully connected layer: M = 1 of a 64-row tile
                     [4096, 1024, 1024, 1, 1],
                     [np.nan] * 5])
    eff = shape_efficiency(rows, "int8")
    assert eff.round(4).tolist() == [0.75, 0.75, round(1 / 64 * 1000 / 1024, 4), 1.0, 1.0]
    assert shape_efficiency(rows[1:2], "fp16")[0] == pytest.approx(48 / 48)  # FP16 K step 16: 48 is aligned


# ---- factors -----------------------------------------------------------------------------------------------------
def test_fitted_factors_carry_their_provenance():
    data = load()
    prov = data["provenance"]
    assert prov["records"] and prov["published_sha256"] and "plan_gpu_reference.py" in prov["command"]
    assert "all" in data["fits"]
    for family in ("ada", "hopper"):
        f = gpu_factors(family)
        assert family in f["_basis"].source and f["eff_matrix"].value == data["fits"][family]["eff_matrix"]["value"]
    other = gpu_factors("cdna3")  # no published record of this family: the fit over every family
    assert "none of the cdna3 family" in other["_basis"].source
    assert other["eff_matrix"].value == data["fits"]["all"]["eff_matrix"]["value"]
    prior = gpu_factors("ada", data={})
    assert prior["eff_matrix"] == PRIORS["eff_matrix"] and "priors" in prior["_basis"].source
    jet = gpu_factors("ampere", jetson=True, data={})
    assert jet["kernel_floor"].value == 2 * PRIORS["kernel_floor"].value


def test_power_term():
    assert power_term(72, 118.2, 0.0) == (1.0, "no power term")
    t, how = power_term(72, 118.2, 0.5)
    assert t == pytest.approx((72 / 118.2) ** 0.5) and "72 W" in how and "SM-GHz" in how
    assert power_term(None, 118.2, 0.5)[0] == 1.0
    assert power_term(1000, 1, 1.0)[0] == 1.5  # clipped


def test_sm_ghz_comes_from_the_fp16_peak_and_the_per_sm_rate():
    # A10: 125 TFLOPS = 72 SMs x 1.695 GHz x 1024; A100: 312 = 108 x 1.41 x 2048; H100 SXM: 989.5 = 132 x 1.83 x 4096
    assert sm_ghz(load_profile("a10")) == pytest.approx(72 * 1.695, rel=0.01)
    assert sm_ghz(load_profile("a100-pcie-40gb")) == pytest.approx(108 * 1.41, rel=0.01)
    assert sm_ghz(load_profile("h100-sxm")) == pytest.approx(132 * 1.83, rel=0.01)
    # per SM-GHz the 150 W A10 is fed less than the 250 W A100 PCIe, though per TFLOPS it looked better fed
    assert watts_per_sm_ghz(load_profile("a10")) < watts_per_sm_ghz(load_profile("a100-pcie-40gb"))
    assert load_profile("a10").tdp_w / 125 > load_profile("a100-pcie-40gb").tdp_w / 312


def test_power_groups_join_a_generations_discrete_boards_and_keep_jetsons_apart():
    assert power_group(load_profile("a10")) == power_group(load_profile("a100-sxm4-80gb")) == "ampere"
    assert power_group(load_profile("jetson-agx-orin-64gb")) == "ampere-orin"
    assert power_group(load_profile("h100-pcie")) == "hopper"
    # sm_120 (1024 FP16 FLOP per SM and clock) is planned apart from sm_100 (8192), each its own power group
    assert planning_family(load_profile("rtx-pro-6000-blackwell")) == power_group(load_profile("gb10")) == "blackwell-rtx"
    assert power_group(load_profile("b200")) == "blackwell"


def test_power_term_is_relative_to_the_familys_reference():
    data = {"power_reference": {"ada": {"value": 0.776, "profiles": ["l4", "l40s"]}}}
    ref, how = power_reference("ada", data)
    assert ref == 0.776 and "l4, l40s" in how
    assert power_term(72, 118.2, 0.5, ref)[0] == pytest.approx((72 / 118.2 / 0.776) ** 0.5)
    assert power_reference("cdna3", data)[0] is None  # no reference stored: the board is its own, no term
    assert power_term(72, 118.2, 0.5, None) == (1.0, "no power term (no reference W per SM-GHz for this family)")
    stored = load()["power_reference"]  # written by the fit, one per planning family with a shipped board
    assert {"ada", "ampere", "ampere-dc", "ampere-orin", "hopper", "turing"} <= set(stored)
    assert stored["ampere"]["value"] == stored["ampere-dc"]["value"]  # one group: the discrete Ampere boards
    assert "a10" in stored["ampere-dc"]["profiles"] and "a100-pcie-40gb" in stored["ampere"]["profiles"]


def test_jetson_orin_is_fitted_apart_from_the_discrete_sm86_boards():
    assert planning_family(load_profile("a10")) == "ampere"
    assert planning_family(load_profile("jetson-agx-orin-64gb")) == "ampere-orin"
    assert planning_family(load_profile("h100-sxm")) == "hopper"
    assert "ampere-orin" in gpu_model(load_profile("jetson-orin-nx-16gb"), "int8").factors_basis


def test_pre_ampere_families_share_fitted_gap_and_efficiency_factors():
    data = {"provenance": {}, "fits": {"all": {"kernel_gap": 5e-6, "pre_ampere_gap": 3.0, "eff_matrix": 0.6,
                                               "pre_ampere_eff": 0.5},
                                       "volta-xavier": {"kernel_gap": 2e-5, "eff_matrix": 0.25}}}
    turing = gpu_factors("turing", data=data)  # no turing fit: the base values x the shared factors
    assert turing["kernel_gap"].value == pytest.approx(15e-6) and "x 3" in turing["kernel_gap"].source
    assert turing["eff_matrix"].value == pytest.approx(0.3) and "x 0.5" in turing["eff_matrix"].source
    xavier = gpu_factors("volta-xavier", data=data)  # its own fit carries the factors already
    assert xavier["kernel_gap"].value == 2e-5 and xavier["eff_matrix"].value == 0.25
    ampere = gpu_factors("ampere", data=data)  # cp.async (sm_80+): not applied
    assert ampere["kernel_gap"].value == 5e-6 and ampere["eff_matrix"].value == 0.6
    stored = load()["fits"]["all"]
    assert stored["pre_ampere_gap"]["value"] > 1 and "cp.async" in stored["pre_ampere_gap"]["source"]
    assert stored["pre_ampere_eff"]["value"] < 1 and "cp.async" in stored["pre_ampere_eff"]["source"]


def test_kernel_gap_is_a_number_of_cycles():
    ref = reference_clock_mhz()
    assert gap_scale(2 * ref)[0] == pytest.approx(0.5) and gap_scale(None)[0] == 1.0
    assert boost_clock(load_profile("l4"))[0] == 2040 and boost_clock(load_profile("t4"))[0] == 1590
    assert boost_clock(load_profile("b200"))[0] is None  # not in gpu_clocks.yaml: no scaling

    @dataclasses.dataclass
    class Extends:  # a user profile that extends t4
        name: str = "my-t4"
        chain: tuple = ("my-t4", "t4", "_datacenter")

    assert boost_clock(Extends())[0] == 1590
    l4 = gpu_model(load_profile("l4"), "int8")
    fitted = gpu_factors("ada")["kernel_gap"].value
    assert l4.op_overhead.value == pytest.approx(fitted * ref / 2040)
    assert "2040 MHz" in l4.op_overhead.source and "cycles" in l4.op_overhead.source
    a100 = gpu_model(load_profile("a100-sxm4-80gb"), "int8")
    assert a100.op_overhead.value == pytest.approx(gpu_factors("ampere-dc")["kernel_gap"].value * ref / 1410)


def test_every_gpu_factor_says_where_it_comes_from():
    dev = gpu_model(load_profile("h100-sxm"), "int8")
    assert dev.engine == "fused" and dev.fused_attention
    for f in (dev.eff_matrix, dev.eff_vector, dev.eff_memory, dev.kernel_floor, dev.op_overhead, dev.batch_overhead,
              dev.l2_fraction):
        assert len(f.source) > 20
    assert "hopper" in dev.factors_basis


# ---- every shipped profile ---------------------------------------------------------------------------------------
def _tiny():
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", F, ["N", 64])], [helper.make_tensor_value_info("y", F, None)],
                  [_w("w", 64, 64), _w("b", 64)])


@pytest.mark.parametrize("name", sorted(ProfileRegistry().names()))
def test_every_shipped_profile_plans_or_names_the_missing_figure(name, host_peaks):
    prof = load_profile(name)
    curve = build_curve(_tiny(), precision=None)
    for prec in prof.precisions:
        try:
            dev = device_model(prof, prec, peaks=host_peaks)
        except ProfileError as exc:
            assert name in str(exc) and ("peak_tflops." in str(exc) or "memory_bandwidth_gbps" in str(exc))
            assert "unknown" in str(exc) or "not given" in str(exc)
            continue
        bt = batch_time(dev, build_curve(_tiny(), precision=prec) if prec != "fp32" else curve, 4)
        assert bt.seconds > 0 and np.isfinite(bt.seconds)


def test_an_unknown_peak_skips_that_profile_and_the_others_still_plan():
    r = plan(_tiny(), profiles="t4,jetson-agx-thor", precision="int8", sim_requests=2000, screen=500)
    assert [p.profile.name for p in r.plans] == ["t4"]
    assert r.skipped[0]["profile"] == "jetson-agx-thor"
    assert "peak_tflops.int8 is unknown" in r.skipped[0]["reason"] and "--precision" in r.skipped[0]["reason"]
    with pytest.raises(ProfileError, match="jetson-agx-thor: peak_tflops.int8 is unknown"):
        plan(_tiny(), profiles="jetson-agx-thor", precision="int8", sim_requests=2000, screen=500)


def test_plan_all_profiles_json_and_explain():
    import json

    r = plan(_tiny(), profiles="all", sim_requests=1000, screen=300)
    names = {p.profile.name for p in r.plans} | {s["profile"] for s in r.skipped}
    assert {"t4", "l4", "h100-sxm", "jetson-agx-orin-64gb"} <= {p.profile.name for p in r.plans}
    assert len(names) == len(ProfileRegistry().names()) - 1  # every profile but the host's cpu one
    for s in r.skipped:  # only a figure the vendor does not publish may stop a profile, and the reason names it
        assert s["profile"] in s["reason"] and ("unknown" in s["reason"] or "not given" in s["reason"])
    doc = json.loads(json.dumps(r.to_dict(), default=str))
    gpu = next(p for p in doc["profiles"] if p["profile"] == "l4")
    assert gpu["device_model"]["engine"] == "fused" and gpu["device_model"]["l2_bytes"] == 48 * 2**20
    figures = {e["figure"] for e in gpu["explain"]}
    assert {"kernels (TensorRT-like fusion)", "on-chip L2", "tensor-core tile efficiency at batch 1",
            "compute / memory overlap"} <= figures


def test_depthwise_convolutions_run_on_the_vector_units():
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1] * 4, group=32)]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, ["N", 32, 28, 28])],
               [helper.make_tensor_value_info("y", F, None)], [_w("w", 32, 1, 3, 3)])
    curve = build_curve(m, precision="fp16")
    dev = gpu_model(load_profile("a100-sxm4-80gb"), "fp16")
    t = kernel_terms(dev, curve, 4)
    assert t.matrix_s.sum() == 0 and t.vector_s.sum() == pytest.approx(curve.total_flops(4) / (dev.vector_tflops * 1e12))


def test_gpu_kernels_combine_compute_and_memory_with_the_fitted_exponent():
    from xinfer_sdk.planning.gpu import fused_times, kernel_seconds, l2_share

    dev = gpu_model(load_profile("t4"), "int8")
    fam = gpu_factors(planning_family(load_profile("t4")))
    assert dev.roofline_p is not None and dev.roofline_p.value == fam["roofline_p"].value
    curve = build_curve(_tiny(), precision="int8")
    terms = kernel_terms(dev, curve, 8)
    kw = dict(eff_matrix=dev.eff_matrix.value, eff_vector=dev.eff_vector.value, eff_memory=dev.eff_memory.value,
              bandwidth_gbps=dev.bandwidth_gbps, l2_share_bytes=l2_share(dev), floor=0.0, gap=0.0)
    t1, tc, tm = kernel_seconds(terms, p=1.0, **kw)  # p = 1: no overlap, the times add up
    assert np.allclose(t1, tc + tm)
    tinf, _, _ = kernel_seconds(terms, p=60.0, **kw)  # large p: the sharp roofline
    assert np.allclose(tinf, np.maximum(tc, tm), rtol=0.05)
    t = fused_times(dev, curve, 8)[0]  # the product path uses the device's own p
    want, _, _ = kernel_seconds(terms, p=dev.roofline_p.value, **{**kw, "floor": dev.kernel_floor.value,
                                                                  "gap": dev.op_overhead.value})
    assert np.allclose(t[terms.heads], want)
