"""`plan --measure` and `tune` on this machine, through the real runtime (ONNX Runtime on the CPU).

Timings are not asserted (they belong to bench/plan_accuracy.py): these tests check that the measurement
goes through the runtime, that the fit and the sweep produce consistent, complete results, and that tune
writes a policy the runtime loads back with every checksum intact.
"""

from __future__ import annotations

import json

import pytest
import yaml

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from xinfer_sdk.bundle import open_bundle  # noqa: E402
from xinfer_sdk.errors import UserError  # noqa: E402
from xinfer_sdk.planning import plan  # noqa: E402
from xinfer_sdk.planning.calibrate import calibrate_present, measure  # noqa: E402
from xinfer_sdk.policy import BatchPolicy  # noqa: E402
from xinfer_sdk.profiles import load_profile  # noqa: E402

QUICK = {"batch_sizes": (1, 2, 4, 8), "fit_on": (1, 8), "rounds": 2, "min_seconds": 0.05}
ON_CPU = {**QUICK, "profile": "cpu"}  # measure under the cpu profile even on a GPU machine


def test_measure_runs_batches_through_the_runtime(mlp_file):
    got = measure(mlp_file, profile=load_profile("cpu"), batch_sizes=(1, 4), rounds=2, min_seconds=0.02)
    assert set(got) == {1, 4}
    for row in got.values():
        assert row["runs"] >= 2 and 0 < row["p10"] <= row["p25"] <= row["median"] <= row["p90"]


def test_calibrate_present_fits_the_cpu_device(mlp_file):
    prof, dev, report = calibrate_present(mlp_file, profile="cpu", **QUICK)
    assert prof.name == "cpu" and dev.calibrated and dev.calibration is report
    assert [r["batch"] for r in report["rows"]] == [1, 2, 4, 8]
    assert [r["fitted"] for r in report["rows"]] == [True, False, False, True]
    for r in report["rows"]:
        assert r["predicted_s"] > 0 and r["error"] == pytest.approx((r["predicted_s"] - r["measured_s"])
                                                                    / r["measured_s"])
    assert report["max_abs_error"] == max(abs(r["error"]) for r in report["rows"])
    assert dev.eff_matrix.value == report["factors"]["eff_compute"] and "fitted" in dev.eff_memory.source
    # a small MLP is overhead-dominated here: its compute efficiency is fitted only when the measurements pin it
    assert ("fitted" if report["compute"]["identified"] else "kept at the profile's") in dev.eff_matrix.source


def test_plan_measure_calibrates_the_present_profile_only(mlp_file):
    result = plan(mlp_file, profiles="cpu,t4", p99="10ms", measure=True, measure_kw=ON_CPU, sim_requests=2000,
                  screen=500)
    cpu, t4 = result.plans
    assert cpu.device.calibrated and cpu.calibration["rows"]
    assert not t4.device.calibrated and t4.calibration is None
    assert any(f == "calibration" for f, _, _ in cpu.explain)
    json.dumps(result.to_dict())


def test_tune_writes_the_best_policy_into_the_bundle(mlp_bundle, tmp_path):
    from xinfer_sdk.planning.tune import grid, tune

    png = tmp_path / "sweep.png"
    policies = grid(batches=(1, 8), delays=(0.0, 0.001), workers=(1,))
    assert [(p.max_batch_size, p.max_batch_delay) for p in policies] == [(1, 0.0), (8, 0.0), (8, 0.001)]
    result = tune(mlp_bundle, p99="200ms", profile="cpu", duration=0.3, policies=policies, plot=str(png))
    assert len(result.points) == 3 and result.best is not None and result.best.meets_slo
    assert result.best.throughput == max(p.throughput for p in result.points if p.meets_slo)
    assert png.read_bytes()[:4] == b"\x89PNG"
    bundle = open_bundle(mlp_bundle)  # verifies every checksum again
    assert BatchPolicy.from_dict(bundle.manifest.batch) == result.best.policy


def test_tune_to_config_yaml_leaves_the_bundle_alone(mlp_bundle, tmp_path):
    from xinfer_sdk.planning.tune import grid, tune

    before = (mlp_bundle / "xinfer.yaml").read_text()
    cfg = tmp_path / "config.yaml"
    result = tune(mlp_bundle, p99="200ms", profile="cpu", duration=0.2, output=str(cfg),
                  policies=grid(batches=(4,), delays=(0.0,), workers=(1,)))
    assert (mlp_bundle / "xinfer.yaml").read_text() == before
    from xinfer_sdk.runtime.loader import read_config

    assert BatchPolicy.from_dict(read_config(cfg)) == result.best.policy
    assert yaml.safe_load(cfg.read_text())["batch"]["max_batch_size"] == 4


def test_tune_cli_json_and_errors(cli_run, mlp_bundle, mlp_file, tmp_path):
    code, out, err = cli_run("tune", str(mlp_bundle), "--p99", "200ms", "--profile", "cpu", "--duration", "0.2s",
                             "--batch-sizes", "2", "--delays", "0ms", "--workers", "1", "--no-write", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["best"]["policy"]["max_batch_size"] == 2 and data["written"] is None
    code, out, err = cli_run("tune", str(mlp_file), "--p99", "20ms")
    assert code == 2 and "not a bundle" in err
    code, out, err = cli_run("tune", str(mlp_bundle), "--p99", "soon")
    assert code == 2 and "--p99" in err
    code, out, err = cli_run("tune", str(mlp_bundle), "--p99", "20ms", "--batch-sizes", "0")
    assert code == 2 and "--batch-sizes" in err
    with pytest.raises(UserError):
        from xinfer_sdk.planning.tune import tune

        tune(tmp_path / "nothing", p99="20ms")


def test_plan_measure_on_a_bundle_loads_the_bundle(mlp_bundle):
    result = plan(mlp_bundle, profiles="cpu", p99="10ms", measure=True, measure_kw=ON_CPU, sim_requests=2000,
                  screen=500)
    assert result.model == "mlp" and result.plans[0].device.calibrated
    assert result.plans[0].choice.policy.max_queue_size == 1024  # the bundle's policy is the search's base
