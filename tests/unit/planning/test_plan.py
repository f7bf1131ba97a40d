"""Policy search, replicas, memory fit, choice between profiles, precision handling."""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest

pytest.importorskip("onnx")

from xinfer_sdk.errors import ConversionError, UserError  # noqa: E402
from xinfer_sdk.planning import plan  # noqa: E402
from xinfer_sdk.planning.cost import build_curve  # noqa: E402
from xinfer_sdk.planning.device import Factor, batch_time, gpu_model  # noqa: E402
from xinfer_sdk.planning.planner import SEED_RULE, choose_best, memory_fit, parse_p99  # noqa: E402
from xinfer_sdk.planning.recommend import HEADROOM, Recommender  # noqa: E402
from xinfer_sdk.profiles import load_profile  # noqa: E402

FAST = {"sim_requests": 3000, "screen": 1000}


def recommender(curve, profile="t4", p99=0.010, **kw):
    prof = load_profile(profile)
    dev = gpu_model(prof, "fp16")
    times = functools.lru_cache(maxsize=None)(lambda b: batch_time(dev, curve, b))
    return Recommender(dev, times, max_batch=64, batched=True, p99=p99, base=prof.batch, requests=3000,
                       screen=1000, **kw)


def test_replicas_are_monotone_in_the_target_rate(mlp):
    curve = build_curve(mlp)
    rec = recommender(curve)
    cap = rec.recommend(None).capacity
    assert cap > 0
    replicas = []
    for frac in (0.2, 0.9, 1.5, 3.2, 6.0):
        choice = recommender(curve).recommend(frac * cap)
        assert choice.feasible and choice.sim.p99 <= 0.010
        assert choice.rate == pytest.approx(frac * cap / choice.replicas)
        replicas.append(choice.replicas)
    assert replicas == sorted(replicas) and replicas[0] == 1 and replicas[-1] >= 6


def test_a_policy_is_never_planned_above_its_headroom(mlp):
    rec = recommender(build_curve(mlp))
    choice = rec.recommend(None)
    pol = choice.policy
    assert choice.rate <= HEADROOM * rec.sustainable(pol) + 1e-9
    assert choice.sim.p99 <= 0.010 and choice.sim.rejected == 0


def test_infeasible_when_one_request_alone_misses_the_target(mlp):
    choice = recommender(build_curve(mlp), p99=1e-6).recommend(100.0)
    assert not choice.feasible and choice.policy is None and "alone takes" in choice.reason


def test_memory_fit_counts_weights_activations_and_io(mlp):
    curve = build_curve(mlp)
    t4 = load_profile("t4")
    mem = memory_fit(t4, curve)
    usable = t4.usable_memory_gb() * 1e9
    assert mem.usable_bytes == pytest.approx(usable)
    per = mem.activation_per_sample + mem.io_per_sample
    assert mem.need(mem.max_batch) <= usable < mem.need(mem.max_batch + 1)
    assert mem.need(1) == pytest.approx(mem.weights_bytes + mem.activation_fixed + per)
    assert mem.seed_rule_bytes == pytest.approx(SEED_RULE * curve.weight_bytes) and mem.seed_rule_ok
    assert not mem.weights_per_worker and memory_fit(load_profile("cpu"), curve).weights_per_worker
    tiny = dataclasses.replace(t4, memory_gb=1.0 + curve.weight_bytes / 1e9 / 0.9 * 0.5)  # cannot hold the weights
    small = memory_fit(tiny, curve)
    assert small.max_batch == 0 and small.seed_rule_ok


def test_plan_reports_a_model_that_does_not_fit(mlp):
    t4 = load_profile("t4")
    tiny = dataclasses.replace(t4, name="tiny", memory_gb=1.0)  # 0 GB usable after the 1 GB reserve
    result = plan(mlp, profiles=[tiny], p99="10ms", **FAST)
    ch = result.plans[0].choice
    assert not ch.feasible and "more than the" in ch.reason
    assert result.best["fewest_devices"] is None


def test_plan_several_profiles_picks_fewest_devices_then_cheapest(mlp):
    result = plan(mlp, profiles="t4,l4", p99="5ms", target_qps=500000, prices={"t4": 0.5, "l4": 0.8}, **FAST)
    by = {p.profile.name: p for p in result.plans}
    assert all(p.choice.feasible for p in result.plans)
    fewest = min(result.plans, key=lambda p: (p.devices, p.cost_per_hour))
    assert result.best["fewest_devices"] == fewest.profile.name
    cheapest = min(result.plans, key=lambda p: p.cost_per_hour)
    assert result.best["cheapest"] == cheapest.profile.name
    assert by["t4"].cost_per_hour == pytest.approx(0.5 * by["t4"].devices)
    json.dumps(result.to_dict())  # the --json output is plain data


def test_choose_best_without_a_target_rate_ranks_by_capacity(mlp):
    result = plan(mlp, profiles="t4,a100-sxm4-80gb", p99="5ms", **FAST)
    best = max(result.plans, key=lambda p: p.choice.capacity)
    assert result.best["fewest_devices"] == best.profile.name and result.best["devices"] is None
    assert choose_best([])["fewest_devices"] is None


def test_precision_defaults_and_repricing(mlp):
    result = plan(mlp, profiles="cpu,t4", p99="20ms", **FAST)
    by = {p.profile.name: p for p in result.plans}
    assert by["cpu"].precision == "fp32" and by["t4"].precision == "fp16"  # each profile's default
    assert by["t4"].curve.weight_bytes == pytest.approx(by["cpu"].curve.weight_bytes / 2, rel=0.01)
    int8 = plan(mlp, profiles="t4", precision="int8", p99="20ms", **FAST).plans[0]
    assert int8.curve.weight_bytes == pytest.approx(by["cpu"].curve.weight_bytes / 4, rel=0.02)
    assert int8.device.matrix_tflops == 130
    with pytest.raises(UserError, match="no FP8"):
        plan(mlp, profiles="t4", precision="fp8", **FAST)


def test_explain_has_a_derivation_for_every_figure(mlp):
    pp = plan(mlp, profiles="l4", p99="10ms", target_qps=20000, **FAST).plans[0]
    figures = {f for f, _, _ in pp.explain}
    for needed in ("model FLOPs per sample", "matrix peak (conv, matmul)", "memory bandwidth", "efficiency, memory",
                   "largest batch that fits", "seed rule: memory >= 1.5 x parameters", "recommended policy",
                   "replicas", "bound at batch 1", "latency at batch 1"):
        assert needed in figures
    assert all(v and d for _, v, d in pp.explain)


def test_bad_inputs_are_user_errors(mlp, tmp_path, seq_model_file):
    with pytest.raises(UserError, match="p99"):
        plan(mlp, p99="fast")
    with pytest.raises(UserError, match="above 0"):
        parse_p99("0ms")
    with pytest.raises(UserError, match="target-qps"):
        plan(mlp, target_qps=-3)
    with pytest.raises(UserError):
        plan(mlp, profiles="no-such-gpu")
    with pytest.raises(UserError, match="not among"):
        plan(mlp, profiles="t4", prices={"l4": 1.0})
    with pytest.raises(UserError, match="no model or bundle"):
        plan(tmp_path / "missing.onnx")
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"x")
    with pytest.raises(ConversionError, match="ONNX"):
        plan(pt)
    with pytest.raises(UserError, match="'seq'.*--shapes x:"):
        plan(seq_model_file, profiles="t4")


def test_calibrated_factors_replace_the_defaults(mlp, host_peaks):
    from xinfer_sdk.planning.calibrate import fit
    from xinfer_sdk.planning.device import device_model

    curve = build_curve(mlp)
    base = device_model(load_profile("cpu"), "fp32", peaks=host_peaks)
    truth = base.with_factors(eff_matrix=Factor(0.8, ""), eff_vector=Factor(0.8, ""), eff_memory=Factor(2.5, ""),
                              batch_overhead=Factor(60e-6, ""))
    measured = {b: batch_time(truth, curve, b, requests=1).seconds for b in (1, 2, 4, 8, 16, 32, 64, 128, 256)}
    fitted, report = fit([(curve, measured)], base, fit_on=(1, 8, 64, 256))
    assert report["max_abs_error"] < 0.02  # the model family contains the truth: the fit recovers it
    assert report["max_abs_error_held_out"] < 0.02
    assert fitted.calibrated and fitted.eff_matrix.value == pytest.approx(0.8, rel=0.1)
    assert [r["fitted"] for r in report["rows"]].count(True) == 4
