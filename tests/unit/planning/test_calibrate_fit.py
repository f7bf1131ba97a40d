"""`plan --measure`'s fit: compute efficiency within (0, 1] of peak, the profile's value kept (and said) when an
overhead-dominated model cannot pin it, the error against the +-15 % target reported, the measurement shortened
by --measure-seconds / --measure-batches. Synthetic measurements: no timing, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from xinfer_sdk.errors import UserError
from xinfer_sdk.planning.calibrate import DEFAULT_BATCHES, DEFAULT_FIT_ON, fit, measure_options
from xinfer_sdk.planning.cost import build_curve
from xinfer_sdk.planning.device import Factor, batch_time, device_model
from xinfer_sdk.profiles import load_profile


def mlp_proto(sizes):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev = [], [], "x"
    for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits += [numpy_helper.from_array(np.zeros((o, i), np.float32), f"w{k}"),
                  numpy_helper.from_array(np.zeros(o, np.float32), f"b{k}")]
        out = "y" if k == len(sizes) - 2 else f"g{k}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{k}", f"b{k}"], [out], transB=1))
        if out != "y":
            nodes.append(helper.make_node("Relu", [out], [f"h{k}"]))
            prev = f"h{k}"
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", sizes[0]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", sizes[-1]])], inits)
    return onnx.helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def cpu(host_peaks):
    return device_model(load_profile("cpu"), "fp32", peaks=host_peaks)


@pytest.fixture(scope="module")
def digits():
    """The digits MLP's topology (examples/models.py digits_mlp: 64-128-64-10, 17,226 parameters)."""
    return build_curve(mlp_proto((64, 128, 64, 10)), name="digits")


@pytest.fixture(scope="module")
def big_mlp():
    return build_curve(mlp_proto((784, 1024, 1024, 10)), name="mlp")


def overhead_dominated():
    """What `plan --measure` measured for the digits MLP here: 66 us at batch 1, +0.55 us per sample."""
    return {b: 66e-6 + 0.55e-6 * b for b in DEFAULT_BATCHES}


def made_by(dev, curve, **factors):
    truth = dev.with_factors(**{k: Factor(v, "truth") for k, v in factors.items()})
    return {b: batch_time(truth, curve, b, requests=1).seconds for b in DEFAULT_BATCHES}


def test_an_overhead_dominated_model_keeps_the_profiles_compute_efficiency(cpu, digits):
    fitted, report = fit([(digits, overhead_dominated())], cpu, fit_on=DEFAULT_FIT_ON)
    comp = report["compute"]
    assert not comp["identified"]
    assert report["factors"]["eff_compute"] == pytest.approx(cpu.eff_matrix.value)
    assert "overhead-dominated" in comp["note"] and "kept the profile's 0.6" in comp["note"]
    assert fitted.eff_matrix.value <= 1.0


def test_the_fit_of_an_overhead_dominated_model_still_predicts_its_latency(cpu, digits):
    _, report = fit([(digits, overhead_dominated())], cpu, fit_on=DEFAULT_FIT_ON)
    assert report["max_abs_error"] < 0.05 and report["meets_target"]


def test_a_compute_bound_model_gets_its_compute_efficiency_fitted(cpu, big_mlp):
    measured = made_by(cpu, big_mlp, eff_matrix=0.4, eff_vector=0.4, eff_memory=1.0, batch_overhead=40e-6)
    _, report = fit([(big_mlp, measured)], cpu, fit_on=DEFAULT_FIT_ON)
    assert report["compute"]["identified"] and not report["compute"]["clamped"]
    assert report["factors"]["eff_compute"] == pytest.approx(0.4, rel=0.1)
    assert report["max_abs_error"] < 0.03


def test_compute_efficiency_never_exceeds_the_peak(cpu, big_mlp):
    measured = made_by(cpu, big_mlp, eff_matrix=2.5, eff_vector=2.5, eff_memory=1.0, batch_overhead=40e-6)
    fitted, report = fit([(big_mlp, measured)], cpu, fit_on=DEFAULT_FIT_ON)
    assert report["factors"]["eff_compute"] == pytest.approx(1.0)
    assert report["compute"]["clamped"] and "held at 1 of the peak" in report["compute"]["note"]
    assert fitted.eff_matrix.value == pytest.approx(1.0) and "held at 1 of the peak" in fitted.eff_matrix.source
    assert report["max_abs_error"] == max(abs(r["error"]) for r in report["rows"])
    import json

    json.dumps(report)  # `plan --measure --json` carries the report: plain Python types (a numpy bool was not)
    assert type(report["compute"]["clamped"]) is bool and type(report["compute"]["identified"]) is bool


def test_each_row_gives_both_latencies(cpu, digits):
    _, report = fit([(digits, overhead_dominated())], cpu, fit_on=DEFAULT_FIT_ON)
    row = next(r for r in report["rows"] if r["batch"] == 32)
    # the plan's table counts b requests of one sample: b - 1 more per-request overheads than one request of b
    extra = row["predicted_b_requests_s"] - row["predicted_s"]
    assert extra == pytest.approx(31 * cpu.request_overhead.value)


def test_measure_options_shorten_the_measurement():
    assert measure_options(0.05, [32, 1, 8]) == {"min_seconds": 0.05, "batch_sizes": [1, 8, 32], "fit_on": [1, 32]}
    assert measure_options(None, [2, 3])["fit_on"] == [2, 3]  # fewer than two default fit sizes: fit on all
    assert measure_options() == {}


@pytest.mark.parametrize("seconds, batches", [(0.0, None), (-1.0, None), (120.0, None), (None, [8]), (None, [0, 4])])
def test_measure_options_refuse_what_cannot_be_measured(seconds, batches):
    with pytest.raises(UserError, match="--measure-"):
        measure_options(seconds, batches)


@pytest.fixture
def cpu_nominal_clock(host):
    """A host whose clock was read from /proc/cpuinfo: nominal, turbo not visible, so its peak is a floor."""
    from xinfer_sdk.planning.host import NOMINAL, host_peaks

    peaks = host_peaks(host, measure_bandwidth=False, clock=(2.5, f"/proc/cpuinfo 'cpu MHz' (nominal; {NOMINAL})"))
    return device_model(load_profile("cpu"), "fp32", peaks=peaks)


def test_a_turbo_above_a_nominal_clock_is_fitted_up_to_twice_the_peak(cpu_nominal_clock, big_mlp):
    measured = made_by(cpu_nominal_clock, big_mlp, eff_matrix=1.3, eff_vector=1.3, eff_memory=1.0,
                       batch_overhead=40e-6)
    _, report = fit([(big_mlp, measured)], cpu_nominal_clock, fit_on=DEFAULT_FIT_ON)
    assert report["compute"]["ceiling"] == 2.0 and not report["compute"]["clamped"]
    assert report["factors"]["eff_compute"] == pytest.approx(1.3, rel=0.1)
    measured = made_by(cpu_nominal_clock, big_mlp, eff_matrix=3.0, eff_vector=3.0, eff_memory=1.0,
                       batch_overhead=40e-6)
    _, report = fit([(big_mlp, measured)], cpu_nominal_clock, fit_on=DEFAULT_FIT_ON)
    assert report["factors"]["eff_compute"] == pytest.approx(2.0) and report["compute"]["clamped"]
