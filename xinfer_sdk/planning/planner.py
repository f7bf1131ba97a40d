"""`plan()`: model + hardware profiles + SLO -> per-profile cost, latency table, memory fit, batch policy,
replicas, and which profile meets the SLO with the fewest devices (and the cheapest when prices are known).

    import xinfer_sdk as xs
    result = xs.plan("model.onnx", profiles=["t4", "l4"], target_qps=2000, p99="50ms")
    result.best, result.profiles[0].choice.policy, result.to_dict()
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConversionError, UserError, XinferError
from ..policy import BatchPolicy, parse_duration
from ..profiles import Profile, load_profile, read_host
from ..shapes import ShapeRange, coerce_shapes
from . import explain as _explain
from .bill import check_price_names, expand_profiles
from .cost import CostCurve, build_curve
from .device import DeviceModel, batch_time, device_model
from .recommend import MAX_BATCH_CAP, Choice, Recommender
from .result import MemoryFit, Plan, ProfilePlan

log = logging.getLogger(__name__)

SEED_RULE = 1.5  # the seed's sizing rule: GPU memory >= 1.5 x model parameters
TABLE_MAX = 128


# ----------------------------------------------------------------------------------------------------------
def resolve_model(model: Any) -> tuple[Any, BatchPolicy | None, dict[str, ShapeRange], str, Any]:
    """An ONNX path / ModelProto / bundle dir -> (onnx model, bundle policy, bundle shapes, display name,
    bundle manifest or None)."""
    if hasattr(model, "graph"):
        return model, None, {}, model.graph.name or "model", None
    p = Path(os.fspath(model))
    from ..bundle import is_bundle, open_bundle

    if is_bundle(p):
        bundle = open_bundle(p)
        m = bundle.manifest
        policy = BatchPolicy.from_dict(m.batch, source="bundle batch") if m.batch else None
        return bundle.model_file, policy, bundle_shapes(m), m.name, m
    if not p.exists():
        raise UserError(f"no model or bundle at {str(p)!r}", hint="pass an .onnx file or a bundle folder")
    if p.suffix.lower() != ".onnx":
        raise ConversionError(f"{p.name}: the planner reads ONNX graphs",
                              hint=f"build a bundle first (xinfer-sdk build {p.name} -o model.xinfer) and plan that")
    return p, None, {}, p.stem, None


def bundle_shapes(manifest: Any) -> dict[str, ShapeRange]:
    """The shape ranges a bundle records: its TensorRT engine plan's first optimization profile, else the ranges
    its build was given (``extra.build.shapes``: what a CPU bundle, which has no engine plan, keeps)."""
    recorded = [((manifest.engine_plan or {}).get("profiles") or [{}])[0] or {},
                ((manifest.extra or {}).get("build") or {}).get("shapes") or {}]
    for ranges in recorded:
        shapes: dict[str, ShapeRange] = {}
        for name, r in ranges.items():
            try:
                shapes[name] = ShapeRange(tuple(int(x) for x in r["min"]), tuple(int(x) for x in r["opt"]),
                                          tuple(int(x) for x in r["max"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise UserError(f"bundle {manifest.name!r}: the recorded shape range of {name!r} is not "
                                f"min/opt/max lists of ints ({r!r})",
                                hint="rebuild the bundle, or pass --shapes to plan") from exc
        if shapes:
            return shapes
    return {}


def engine_cap(manifest: Any, profile: Profile) -> int:
    """The batch maximum of the bundle's TensorRT engine plan on this profile's device (0: none): the runtime
    lowers a larger max_batch_size to it (``runtime.loader.engine_batch_cap``), so the planner stops there."""
    if manifest is None:
        return 0
    from ..runtime.loader import engine_batch_cap

    return engine_batch_cap(manifest, "cpu" if profile.kind == "cpu" else "cuda")


def usable_memory(profile: Profile) -> tuple[float | None, str]:
    gb = profile.usable_memory_gb()
    if gb is not None:
        return gb * 1e9, (f"({profile.memory_gb:g} GB - {profile.memory.reserve_gb:g} GB reserve) x "
                          f"{profile.memory.usable_fraction:g} usable fraction (profile memory section)")
    host = read_host()
    if host.memory_gb is None:
        return None, "host memory unknown"
    gb = max(0.0, (host.memory_gb - profile.memory.reserve_gb) * profile.memory.usable_fraction)
    return gb * 1e9, (f"(host {host.memory_gb:g} GB - {profile.memory.reserve_gb:g} GB reserve) x "
                      f"{profile.memory.usable_fraction:g} usable fraction")


def memory_fit(profile: Profile, curve: CostCurve) -> MemoryFit:
    usable, basis = usable_memory(profile)
    w = curve.weight_bytes
    a0, a1 = curve.activation
    i1 = curve.io_max[1]
    per = a1 + i1
    if usable is None:
        max_b = TABLE_MAX
    elif not curve.batched:
        max_b = 1 if w + a0 + per <= usable else 0
    else:
        max_b = int(max(0.0, (usable - w - a0) // per)) if per > 0 else TABLE_MAX
    total = profile.memory_gb * 1e9 if profile.memory_gb is not None else (usable if usable else None)
    seed = SEED_RULE * w
    return MemoryFit(usable_bytes=usable, usable_basis=basis, weights_bytes=w, weights_per_worker=profile.kind == "cpu",
                     activation_per_sample=a1, activation_fixed=a0, io_per_sample=i1, max_batch=max_b,
                     seed_rule_bytes=seed, seed_rule_ok=None if total is None else seed <= total, total_bytes=total)


def _precision_for(profile: Profile, requested: str | None, graph: str) -> str:
    if requested in (None, "", "auto"):
        return profile.check_precision(graph if graph != "fp32" else "auto")
    return profile.check_precision(requested)


def plan_profile(profile: Profile, model: Any, *, p99: float, target_qps: float | None, precision: str | None,
                 shapes: Mapping[str, ShapeRange] | None, base_policy: BatchPolicy | None, curves: dict,
                 device: DeviceModel | None = None, sim_requests: int = 20000, screen: int = 3000,
                 calibration: dict[str, Any] | None = None, batch_cap: int = 0) -> ProfilePlan:
    """``batch_cap``: the bundle's TensorRT engine plan maximum (0: none); no candidate goes above it."""
    graph = curves.get("_graph")
    if graph is None:
        graph = curves["_graph"] = build_curve(model, shapes=shapes)
    prec = _precision_for(profile, precision, graph.graph_precision)
    if prec not in curves:
        curves[prec] = graph if prec == graph.graph_precision else build_curve(model, precision=prec, shapes=shapes)
    curve: CostCurve = curves[prec]
    dev = device or device_model(profile, prec)
    mem = memory_fit(profile, curve)
    times = functools.lru_cache(maxsize=None)(lambda b: batch_time(dev, curve, b))
    fits = min(mem.max_batch, batch_cap) if batch_cap else mem.max_batch
    sizes = [b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b <= max(1, min(fits, TABLE_MAX))]
    if not curve.batched:
        sizes = [1]
    base = base_policy or profile.batch
    if mem.max_batch < 1:
        choice = Choice(None, None, None, None, 0.0, None, False,
                        f"the model needs {mem.need(1) / 1e9:.3g} GB at batch 1, more than the "
                        f"{(mem.usable_bytes or 0) / 1e9:.3g} GB usable on {profile.name}")
    else:
        rec = Recommender(dev, times, max_batch=fits, batched=curve.batched, p99=p99, base=base,
                          requests=sim_requests, screen=screen)
        choice = rec.recommend(target_qps)
        if choice.policy is not None and mem.need(choice.policy.max_batch_size, choice.policy.device_concurrency) \
                > (mem.usable_bytes or math.inf):
            choice.reason += "; note: with this many workers the memory estimate exceeds the usable memory"
    if choice.policy is not None and choice.policy.max_batch_size not in sizes:
        sizes = sorted(set(sizes) | {choice.policy.max_batch_size})
    pp = ProfilePlan(profile=profile, precision=prec, device=dev, curve=curve, table=[times(b) for b in sizes],
                     memory=mem, choice=choice, calibration=calibration)
    pp.bound = _explain.bound_summary(pp)
    pp.explain = _explain.lines(pp, p99=p99, target_qps=target_qps)
    if batch_cap and curve.batched and batch_cap < min(mem.max_batch, MAX_BATCH_CAP):
        _explain_cap(pp, batch_cap, min(mem.max_batch, MAX_BATCH_CAP))
    return pp


def _explain_cap(pp: ProfilePlan, cap: int, uncapped: int) -> None:
    """Say (in the reason and in --explain) that the engine plan, not memory, bounds max_batch_size."""
    why = (f"the bundle's TensorRT engine plan covers batches <= {cap}: the runtime lowers a larger max_batch_size "
           "to it, so the candidates stop there (rebuild with --max-batch-size for more)")
    if pp.choice.policy is not None:
        pp.choice.reason += f"; max_batch_size capped at {cap}, the engine plan's maximum"
    at = next((k for k, row in enumerate(pp.explain) if row[0] == "policy search"), len(pp.explain))
    if at < len(pp.explain):
        figure, value, how = pp.explain[at]
        pp.explain[at] = (figure, value, how.replace(f"powers of two up to {uncapped},",
                                                     f"powers of two up to {cap},"))
    pp.explain.insert(at, ("engine plan batch maximum", str(cap), why))


def choose_best(plans: Sequence[ProfilePlan]) -> dict[str, Any]:
    ok = [p for p in plans if p.choice.feasible]
    if not ok:
        return {"fewest_devices": None, "cheapest": None, "reason": "no profile meets the SLO"}
    if all(p.devices is not None for p in ok):
        fewest = min(ok, key=lambda p: (p.devices, p.cost_per_hour if p.cost_per_hour is not None else math.inf,
                                        -(p.choice.capacity or 0.0)))
        why = f"{fewest.devices} x {fewest.profile.name} meets the SLO with the fewest devices"
    else:  # no target rate: the most capacity per device
        fewest = max(ok, key=lambda p: p.choice.capacity or 0.0)
        why = f"{fewest.profile.name} serves the most requests per device within the SLO"
    priced = [p for p in ok if p.cost_per_hour is not None]
    cheapest = min(priced, key=lambda p: p.cost_per_hour) if priced else None
    return {"fewest_devices": fewest.profile.name, "devices": fewest.devices, "reason": why,
            "cheapest": cheapest.profile.name if cheapest else None,
            "cost_per_hour_usd": cheapest.cost_per_hour if cheapest else None}


def plan(model: Any, *, profiles: Sequence[str | Profile] | str = "auto", precision: str | None = None,
         target_qps: float | None = None, p99: str | float = "50ms",
         shapes: Mapping[str, Any] | str | Sequence[str] | None = None, measure: bool = False,
         profiles_dirs: Sequence[str] = (), prices: Mapping[str, float] | None = None,
         sim_requests: int = 20000, screen: int = 3000, measure_kw: Mapping[str, Any] | None = None,
         progress: Callable[[int, int, str], None] | None = None) -> Plan:
    """Plan ``model`` (ONNX path, ModelProto or bundle folder) on each profile for the SLO ("auto": this
    machine's profile).

    shapes: ranges for dynamic axes, as the CLI's ``--shapes`` text ('input_ids:1x8..32x128'), a list of such
    entries, or a dict {input name: '1x3x224x224' | '1x8..32x128' | [1, 3, 224, 224] | {'min', 'opt', 'max'}};
    defaults to the ranges a bundle records."""
    p99_s = parse_p99(p99)
    given_shapes = coerce_shapes(shapes)
    if target_qps is not None and (not isinstance(target_qps, (int, float)) or target_qps <= 0):
        raise UserError(f"--target-qps must be a positive number of requests per second, got {target_qps!r}")
    names = expand_profiles(profiles, profiles_dirs)  # "all": every concrete profile but cpu
    if not names:
        raise UserError("give at least one profile, e.g. --profile t4,l4")
    if any(n == "auto" for n in names if isinstance(n, str)):
        from ..profiles import ProfileRegistry, detect

        here = detect(ProfileRegistry(profiles_dirs)).profile
        names = [here if n == "auto" else n for n in names]
    profs = [p if isinstance(p, Profile) else load_profile(p, profiles_dirs=profiles_dirs) for p in names]
    if prices:
        from ..profiles import ProfileRegistry

        check_price_names(prices, [p.name for p in profs], ProfileRegistry(profiles_dirs).names())
    for name, price in (prices or {}).items():
        for k in [k for k, p in enumerate(profs) if p.name == name]:
            profs[k] = dataclasses.replace(profs[k], price_per_hour_usd=float(price))
    onnx_model, bundle_policy, bundle_shapes, display, manifest = resolve_model(model)
    shapes = dict(given_shapes or bundle_shapes)
    curves: dict[str, Any] = {}
    notes: list[str] = []
    if bundle_shapes and not given_shapes:
        notes.append("shapes recorded in the bundle: " + ", ".join(f"{k} {r.text()}" for k, r in bundle_shapes.items())
                     + " (latency at OPT, memory at MAX; --shapes overrides them)")
    calibrations: dict[str, tuple[DeviceModel, dict[str, Any]]] = {}
    if measure:
        from .calibrate import calibrate_present

        is_dir = not hasattr(model, "graph") and Path(os.fspath(model)).is_dir()
        kw = {"load_path": os.fspath(model)} if is_dir else {}
        kw.update(measure_kw or {})
        present, dev, report = calibrate_present(onnx_model, shapes=shapes, precision=precision,
                                                 profiles_dirs=profiles_dirs, **kw)
        calibrations[present.name] = (dev, report)
        if present.name not in [p.name for p in profs]:
            profs.append(present)
            notes.append(f"--measure ran on this machine ({present.name}); it is planned too, calibrated. The other "
                         "profiles keep their estimates (GPUs: the device model fitted to published results).")
    plans, skipped, failures = [], [], []
    for k, prof in enumerate(profs):
        if progress:
            progress(k, len(profs), f"planning {prof.name}")
        dev, report = calibrations.get(prof.name, (None, None))
        try:
            plans.append(plan_profile(prof, onnx_model, p99=p99_s, target_qps=target_qps, precision=precision,
                                      shapes=shapes, base_policy=bundle_policy, curves=curves, device=dev,
                                      sim_requests=sim_requests, screen=screen, calibration=report,
                                      batch_cap=engine_cap(manifest, prof)))
        except XinferError as exc:  # one profile that cannot be planned (an unknown peak ...) must not stop the rest
            failures.append(exc)
            skipped.append({"profile": prof.name, "reason": str(exc)})
    if failures and not plans:
        raise failures[0]
    if progress:
        progress(len(profs), len(profs), "done")
    graph = curves.get("_graph")
    notes.extend(graph.notes if graph is not None else ())
    warnings = list(graph.warnings if graph is not None else ())
    return Plan(model=display, p99=p99_s, target_qps=target_qps, plans=plans, best=choose_best(plans), notes=notes,
                skipped=skipped, warnings=warnings)


def parse_p99(value: str | float) -> float:
    try:
        s = parse_duration(value, field="--p99")
    except UserError:
        raise UserError(f"--p99: expected a latency target like '50ms' or '0.2s', got {value!r}") from None
    if not (0 < s <= 3600):
        raise UserError(f"--p99: the latency target must be above 0 and at most 1h, got {value!r}")
    return s
