"""`plan --measure`: run the model through the runtime on the hardware at hand, fit the device model's
efficiencies to the measured batch latencies, and report predicted vs measured per batch size.

Measurement: ``xs.load`` with one worker and no batching delay (each ``infer`` of a batch of b is one
batch of b through the batching core), batch sizes interleaved round by round (a shared machine drifts;
interleaving spreads the drift over every size), the 25th percentile per size (``STATISTIC``).

Fit: the roofline keeps its form (per op: soft_max(compute, memory), the kernel floor, the per-op overhead);
the present device's compute efficiency (matrix and vector units alike), memory efficiency (which absorbs
caches: weights that stay in a CPU's L2/L3 stream faster than DRAM), per-batch overhead and per-op
overhead are fitted: a grid over both efficiencies (log-spaced) with the overheads solved by least
squares of relative errors. One model cannot separate the two overheads (its op count is fixed): the
per-op overhead then keeps its default; several models (``fit([...])``) separate them. Only the batch sizes in ``fit_on`` are used; the others are
held out, so the reported error on them is a prediction, not a fit.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import UserError
from ..profiles import Profile, ProfileRegistry, detect, load_profile
from ..shapes import ShapeRange, concrete_dims
from .cost import CostCurve, build_curve
from .device import DeviceModel, Factor, batch_time, device_model, executed, op_times, soft_max
from .host import NOMINAL

log = logging.getLogger(__name__)

DEFAULT_BATCHES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
DEFAULT_FIT_ON = (1, 4, 16, 32)  # fitted; the rest of DEFAULT_BATCHES is held out
DEFAULT_MIN_SECONDS = 0.3  # measured time per batch size, all rounds together (--measure-seconds)
EFF_COMPUTE_MAX = 1.0  # of the peak: a fit never claims more ...
# ... unless the peak was computed from a nominal clock (no cpufreq: /proc/cpuinfo's 'cpu MHz' is the base
# clock, turbo is not visible). Turbo reaches up to about twice the base clock on current server CPUs (Xeon
# Platinum 8481C: 2.0 -> 3.8 GHz; EPYC 7B13: 2.45 -> 3.5 GHz), so the possible range is then up to 2.0.
EFF_COMPUTE_MAX_NOMINAL = 2.0
EM_GRID = np.geomspace(0.02, 20.0, 91)  # memory: above 1 is real when the weights stay in the CPU caches
# Compute efficiencies whose fits are within this RMS relative error of the best one are as good as it (the
# noise of a measurement on a shared machine); when they span more than IDENTIFY_RATIO, compute is not measured.
IDENTIFY_RMS = 0.02
IDENTIFY_RATIO = 2.0
TARGET = 0.15  # docs/planning.md: a calibrated CPU plan is good to about +-15 % for the model measured
# The latency a size is fitted to: the 25th percentile of its runs. Interference from other processes only
# ever slows a run down, so a low percentile estimates the uncontended service time more robustly than the
# median on a shared machine (and the median is reported beside it).
STATISTIC = "p25"


def _feeds(specs, b: int, shapes: Mapping[str, ShapeRange], batched: bool, rng) -> dict[str, np.ndarray]:
    feeds = {}
    for s in specs:
        try:
            dims = concrete_dims(s, batch=b, shapes=shapes, batched=batched)
        except UserError as exc:
            raise UserError(f"--measure: {exc.message}", hint=exc.hint) from None
        dtype = np.dtype(s.dtype)
        if dtype.kind == "f":
            feeds[s.name] = rng.standard_normal(dims).astype(dtype)
        elif dtype.kind == "b":
            feeds[s.name] = np.ones(dims, dtype=dtype)
        else:  # token ids, masks: ones are valid for both (id 1 exists in every vocabulary)
            feeds[s.name] = np.ones(dims, dtype=dtype)
    return feeds


def measure(model_path: str | os.PathLike[str], *, profile: Profile, batch_sizes: Sequence[int] = DEFAULT_BATCHES,
            shapes: Mapping[str, ShapeRange] | None = None, rounds: int = 5, min_seconds: float = 0.3,
            backend: str = "auto", before_round: Callable[[int], None] | None = None) -> dict[int, dict[str, float]]:
    """Latency of one batch of each size through ``xs.load`` (one worker, no delay), in seconds: p10, p25,
    median, p90 over all runs. ``before_round(k)`` is called before each round (a benchmark's quiet gate)."""
    from ..policy import BatchPolicy
    from ..runtime.loader import load

    sizes = sorted(set(int(b) for b in batch_sizes))
    policy = BatchPolicy(max_batch_size=max(sizes), max_batch_delay=0.0, device_concurrency=1, max_queue_size=0)
    rng = np.random.default_rng(0)
    samples: dict[int, list[float]] = {b: [] for b in sizes}
    with load(model_path, profile=profile, backend=backend, batching=policy) as model:
        batched = model.max_batch_size > 0
        feeds = {b: _feeds(model.inputs, b, dict(shapes or {}), batched, rng) for b in sizes}
        for b in sizes:  # warm-up: first runs allocate and pick kernels
            for _ in range(2):
                model.infer(feeds[b])
        for k in range(rounds):
            if before_round is not None:
                before_round(k)
            for b in sizes:
                t_end = time.perf_counter() + min_seconds / rounds
                while True:
                    t0 = time.perf_counter()
                    model.infer(feeds[b])
                    t1 = time.perf_counter()
                    samples[b].append(t1 - t0)
                    if t1 >= t_end:
                        break
        backend_name = model.describe().get("backend", {})
    out = {}
    for b, xs_ in samples.items():
        xs_.sort()
        out[b] = {"median": statistics.median(xs_), "p25": xs_[len(xs_) // 4], "p10": xs_[len(xs_) // 10],
                  "p90": xs_[(9 * len(xs_)) // 10], "runs": len(xs_)}
    log.info("calibrate                          | measured %s on %s", {b: round(v["median"] * 1e3, 3)
                                                                          for b, v in out.items()}, backend_name)
    return out


def _stack(curve: CostCurve, dev: DeviceModel, sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (size, op): compute time and memory time at efficiency 1 (floors applied later), executed-op mask."""
    unit = dev.with_factors(eff_matrix=Factor(1.0, ""), eff_vector=Factor(1.0, ""), eff_memory=Factor(1.0, ""))
    tc, tm = [], []
    for b in sizes:
        _, c, m = op_times(unit, curve, b)
        tc.append(c)
        tm.append(m)
    return np.array(tc), np.array(tm), executed(curve)


def _fixed_parts(a: np.ndarray, y: np.ndarray, counts: np.ndarray, default_op: float) -> tuple[float, float]:
    """Per-batch overhead t0 and per-op overhead t_op >= 0 minimising sum(((r + t0 + n t_op) - y) / y)^2, given
    a = y - r. With one op count (one model) only t0 + n t_op is identified: t_op keeps its default."""
    w = 1.0 / y ** 2
    if len(set(counts.tolist())) > 1:
        A = np.stack([np.ones_like(a), counts], axis=1) * np.sqrt(w)[:, None]
        sol, *_ = np.linalg.lstsq(A, a * np.sqrt(w), rcond=None)
        if sol.min() >= 0:
            return float(sol[0]), float(sol[1])
        t_op = max(0.0, float((a * counts * w).sum() / (counts ** 2 * w).sum()))
        t0 = max(0.0, float(((a - counts * t_op) * w).sum() / w.sum()))
        return t0, t_op
    fixed = max(0.0, float((a * w).sum() / w.sum()))
    n = float(counts[0]) or 1.0
    t_op = min(default_op, fixed / n)
    return max(0.0, fixed - n * t_op), t_op


def _grid(blocks, y: np.ndarray, counts: np.ndarray, floor: float, default_op: float, req: float,
          ecs: Sequence[float]) -> list[tuple[float, float, float, float, float]]:
    """(score, compute eff, memory eff, per-batch overhead, per-op overhead) for each compute efficiency in ``ecs``
    and each memory efficiency of ``EM_GRID``; score: sum of squared relative errors."""
    results = []
    for ec in ecs:  # vectorised over the memory-efficiency grid
        parts = []
        for tc, tm, live, _, _ in blocks:
            t_ops = soft_max(tc[None] / ec, tm[None] / EM_GRID[:, None, None])
            parts.append(np.where(live[None, None], np.maximum(t_ops, floor), t_ops).sum(axis=2))
        r_all = np.concatenate(parts, axis=1)  # (memory grid, points)
        for k, em in enumerate(EM_GRID):
            r = r_all[k]
            t0, t_op = _fixed_parts(y - r - req, y, counts, default_op)
            score = float(((((r + req + t0 + counts * t_op) - y) / y) ** 2).sum())
            results.append((score, float(ec), float(em), t0, t_op))
    return results


def fit(data: Sequence[tuple[CostCurve, Mapping[int, float]]], dev: DeviceModel, *,
        fit_on: Sequence[int] | None = None) -> tuple[DeviceModel, dict[str, Any]]:
    """Fit compute efficiency, memory efficiency, per-batch and per-op overhead of ``dev`` to measured batch
    latencies (seconds) of one or more models: ``data`` = [(cost curve, {batch: seconds}), ...].

    The compute efficiency stays within (0, 1] of the peak (``compute_ceiling``: up to 2 of a CPU peak computed from
    a nominal clock). When the measurements cannot pin it (fits within
    ``IDENTIFY_RMS`` of the best span more than a factor ``IDENTIFY_RATIO`` of compute efficiencies: the
    latency hardly grows with the batch, the model is overhead-dominated here), the profile's own value is
    kept and the rest is fitted around it; the report says so (``report["compute"]``)."""
    blocks = []
    for curve, measured in data:
        use = [b for b in sorted(measured) if fit_on is None or b in fit_on] or sorted(measured)
        tc, tm, live = _stack(curve, dev, use)
        blocks.append((tc, tm, live, np.array([measured[b] for b in use]), use))
    y = np.concatenate([b[3] for b in blocks])
    counts = np.concatenate([np.full(len(b[4]), float(b[2].sum())) for b in blocks])
    floor, default_op = dev.kernel_floor.value, dev.op_overhead.value
    req = dev.request_overhead.value  # each measured batch was one request
    ceiling, ceiling_why = compute_ceiling(dev)
    below = EM_GRID[np.less(EM_GRID, ceiling * 0.999)]
    ec_grid = np.append(below, ceiling)  # the memory grid's steps, up to the ceiling
    results = _grid(blocks, y, counts, floor, default_op, req, ec_grid)
    top = min(r[0] for r in results)
    # Which compute efficiencies fit as well as the best, up to measurement noise (IDENTIFY_RMS per point)?
    tol = top + len(y) * IDENTIFY_RMS ** 2
    good = sorted({r[1] for r in results if r[0] <= tol})
    lo, hi = good[0], good[-1]
    identified = bool(hi / lo <= IDENTIFY_RATIO)
    prior = min(float(dev.eff_matrix.value), ceiling)
    if identified:
        # Among fits as good as the best (within 1 % of its score), take the smallest efficiencies: when a term
        # never binds (weights that stay in cache: any memory efficiency above some value fits equally), the
        # most conservative value consistent with the measurements is kept, not the grid's edge.
        best = min((r for r in results if r[0] <= top * 1.01 + 1e-12), key=lambda r: (r[2], r[1]))
    else:
        kept = _grid(blocks, y, counts, floor, default_op, req, [prior])
        kept_top = min(r[0] for r in kept)
        best = min((r for r in kept if r[0] <= kept_top * 1.01 + 1e-12), key=lambda r: r[2])
    _, ec, em, t0, t_op = best
    clamped = bool(identified and ec >= ec_grid[-1] * 0.999)  # a Python bool: the report goes to JSON
    sizes_text = "; ".join(f"{c.name}: {', '.join(map(str, b[4]))}" for (c, _), b in zip(data, blocks))
    how = f"fitted by `plan --measure` to batch latencies measured through the runtime ({sizes_text})"
    if not identified:
        ec_how = (f"kept at the profile's {prior:.3g}: the measurements cannot pin it (every compute efficiency "
                  f"from {lo:.3g} to {hi:.3g} fits within {IDENTIFY_RMS:.0%} RMS; the model is overhead-dominated here)")
    elif clamped:
        ec_how = how + (f" (compute efficiency, matrix and vector units alike; held at {ceiling:g} of the peak, "
                        f"{ceiling_why}: the measurements ask for more)")
    else:
        ec_how = how + (f" (compute efficiency, matrix and vector units alike, at most {ceiling:g} of the peak: "
                        f"{ceiling_why})")
    fitted = dev.with_factors(
        eff_matrix=Factor(ec, ec_how),
        eff_vector=Factor(ec, ec_how if not identified else how + " (the same compute efficiency)"),
        eff_memory=Factor(em, how + " (memory efficiency against the bandwidth above; above 1 when weights stay in "
                                    "the caches)"),
        op_overhead=Factor(t_op, how + (" (per-op overhead)" if len(data) > 1 else
                                         " (per-op overhead: kept at its default, one model cannot separate it from "
                                         "the per-batch overhead)")),
        batch_overhead=Factor(t0, how + " (per-batch overhead)"), calibrated=True)
    big = max(blocks[0][4])
    bt = batch_time(fitted, data[0][0], big, requests=1)
    share = (bt.compute_s + bt.memory_s) / bt.seconds if bt.seconds > 0 else 0.0
    compute = {"identified": identified, "clamped": clamped, "range": [lo, hi], "ceiling": ceiling,
               "ceiling_basis": ceiling_why, "kept_prior": None if identified else prior, "roofline_share": share,
               "at_batch": big, "note": _compute_note(identified, clamped, lo, hi, prior, share, big, ceiling)}
    report = {"factors": {"eff_compute": ec, "eff_memory": em, "batch_overhead_s": t0, "op_overhead_s": t_op},
              "uncalibrated": {"eff_matrix": dev.eff_matrix.value, "eff_memory": dev.eff_memory.value,
                               "batch_overhead_s": dev.batch_overhead.value, "op_overhead_s": dev.op_overhead.value},
              "compute": compute, "target": TARGET,
              "method": how + f"; grid over compute (at most {ceiling:g} of the peak) and memory efficiency, overheads "
                              "by least squares of relative errors", "models": {}}
    for curve, measured in data:
        report["models"][curve.name] = compare(fitted, curve, measured, fit_on=fit_on)
    first = report["models"][data[0][0].name]
    report.update({k: first[k] for k in ("batches", "fit_on", "rows", "max_abs_error", "max_abs_error_held_out")})
    report["meets_target"] = first["max_abs_error"] <= TARGET
    return fitted.with_factors(calibration=report), report


def compute_ceiling(dev: DeviceModel) -> tuple[float, str]:
    """(largest compute efficiency a fit may take, why): 1.0 of the peak, or EFF_COMPUTE_MAX_NOMINAL of a CPU peak
    computed from a nominal clock (turbo not visible)."""
    if dev.kind == "cpu" and NOMINAL in (dev.matrix_basis or ""):
        return EFF_COMPUTE_MAX_NOMINAL, ("the peak uses the nominal clock (turbo is not visible); turbo reaches up to "
                                         "about 2x the base clock on current server CPUs")
    return EFF_COMPUTE_MAX, "the peak"


def _compute_note(identified: bool, clamped: bool, lo: float, hi: float, prior: float, share: float, b: int,
                  ceiling: float) -> str:
    where = f"compute and memory are {share:.0%} of the predicted batch-{b} latency, the rest is overhead"
    if not identified:
        return (f"overhead-dominated: the measured latency hardly grows with the batch, so the compute efficiency is "
                f"not measurable here (any value from {lo:.3g} to {hi:.3g} fits); kept the profile's {prior:.3g}; "
                f"{where}")
    if clamped:
        return (f"compute efficiency held at {ceiling:g} of the peak, the most that is physically possible (the "
                f"measurements ask for more: the peak estimate is low); {where}")
    return where


def compare(dev: DeviceModel, curve: CostCurve, measured: Mapping[int, float], *,
            fit_on: Sequence[int] | None = None) -> dict[str, Any]:
    """Predicted vs measured per batch size for one model on a (fitted or not) device model. The measurement is one
    request of b samples (``predicted_s``, one per-request overhead); ``predicted_b_requests_s`` is the same batch
    made of b single-sample requests, as the plan's latency table counts it."""
    rows = []
    for b in sorted(measured):
        pred = batch_time(dev, curve, b, requests=1).seconds
        rows.append({"batch": b, "measured_s": measured[b], "predicted_s": pred,
                     "predicted_b_requests_s": batch_time(dev, curve, b).seconds,
                     "error": (pred - measured[b]) / measured[b], "fitted": fit_on is None or b in fit_on})
    held = [r for r in rows if not r["fitted"]]
    return {"batches": [r["batch"] for r in rows], "fit_on": [r["batch"] for r in rows if r["fitted"]], "rows": rows,
            "max_abs_error": max(abs(r["error"]) for r in rows),
            "max_abs_error_held_out": max((abs(r["error"]) for r in held), default=None)}


def measure_options(seconds: float | None = None, batches: Sequence[int] | None = None) -> dict[str, Any]:
    """``calibrate_present`` keywords for ``--measure-seconds`` (measured time per batch size, all rounds together)
    and ``--measure-batches`` (the sizes measured: those of DEFAULT_FIT_ON among them are fitted, at least two,
    the others held out). Raises UserError on values that cannot be measured."""
    kw: dict[str, Any] = {}
    if seconds is not None:
        if not (0.005 <= seconds <= 60):
            raise UserError(f"--measure-seconds: expected 0.005 to 60 seconds per batch size, got {seconds:g}",
                            hint=f"the default is {DEFAULT_MIN_SECONDS:g}; smaller is faster and noisier")
        kw["min_seconds"] = float(seconds)
    if batches is not None:
        sizes = sorted(set(int(b) for b in batches))
        if len(sizes) < 2 or sizes[0] < 1 or sizes[-1] > 4096:
            raise UserError(f"--measure-batches: expected at least two batch sizes from 1 to 4096, got "
                            f"{','.join(map(str, batches)) or 'none'}", hint="e.g. --measure-batches 1,8,32")
        fit_on = [b for b in DEFAULT_FIT_ON if b in sizes]
        kw["batch_sizes"] = sizes
        kw["fit_on"] = fit_on if len(fit_on) >= 2 else sizes
    return kw


def calibrate_present(model: Any, *, shapes: Mapping[str, ShapeRange] | None = None, precision: str | None = None,
                      profiles_dirs: Sequence[str] = (), batch_sizes: Sequence[int] = DEFAULT_BATCHES,
                      fit_on: Sequence[int] | None = DEFAULT_FIT_ON, rounds: int = 5,
                      min_seconds: float = DEFAULT_MIN_SECONDS,
                      profile: Profile | str | None = None, load_path: str | os.PathLike[str] | None = None
                      ) -> tuple[Profile, DeviceModel, dict[str, Any]]:
    """Measure ``model`` on this machine's profile (detected unless given) and fit its device model.

    ``load_path``: what the runtime loads for the measurement when it differs from the graph that is
    priced (a bundle folder: its engines, its precision), else the model file itself."""
    if profile is None:
        profile = detect(ProfileRegistry(profiles_dirs)).profile
    prof = profile if isinstance(profile, Profile) else load_profile(profile, profiles_dirs=profiles_dirs)
    tmp = None
    if hasattr(model, "graph"):
        import onnx

        fd, tmp = tempfile.mkstemp(suffix=".onnx")
        os.close(fd)
        onnx.save(model, tmp)
        path = tmp
    else:
        path = os.fspath(model)
    try:
        curve = build_curve(path, shapes=shapes)
        if precision not in (None, "", "auto", curve.graph_precision):
            log.warning("calibrate                          | --measure runs the graph as stored (%s); the fitted "
                        "efficiencies are applied to the %s roofline", curve.graph_precision, precision)
        dev = device_model(prof, curve.graph_precision)
        measured = measure(load_path or path, profile=prof, batch_sizes=batch_sizes, shapes=shapes, rounds=rounds,
                           min_seconds=min_seconds)
    finally:
        if tmp:
            os.unlink(tmp)
    fitted, report = fit([(curve, {b: v[STATISTIC] for b, v in measured.items()})], dev, fit_on=fit_on)
    for row in report["rows"]:
        row.update({k: measured[row["batch"]][k] for k in ("median", "p10", "p90", "runs")})
    report["profile"] = prof.name
    report["measure"] = {"seconds_per_batch": min_seconds, "rounds": rounds, "batches": sorted(measured)}
    if precision not in (None, "", "auto") and precision != curve.graph_precision:
        fitted = fitted.with_factors(precision=precision)
        base = device_model(prof, precision)
        fitted = base.with_factors(eff_matrix=fitted.eff_matrix, eff_vector=fitted.eff_vector,
                                   eff_memory=fitted.eff_memory, batch_overhead=fitted.batch_overhead,
                                   calibrated=True, calibration=report)
    return prof, fitted, report
