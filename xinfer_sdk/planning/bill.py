"""The hardware bill: what each planned profile costs to serve the SLO, and which one to buy.

    bill = make_bill(result)     # result: what plan() returned (also ``result.bill``)
    bill.cheapest.arithmetic()   # 'l4: 12 GPUs = 12 x aws g6.xlarge x $0.8048/h = $9.66/h; 20,000 req/s -> $0.134 per 1M'
    bill.to_dict()               # the "bill" section of `plan --json`

Prices come from ``pricing`` (a user price per GPU-hour, else the cheapest primary offer for the GPUs needed,
in whole instances). With ``--target-qps`` the bill is for the target: $/h of every instance needed, and $ per
million inferences = $/h / (target req/s x 3600) x 1e6. Without it, for one GPU at its capacity within the p99.
The cheapest choice is the lowest $/h (with a target) or $ per million (without) among the profiles that meet
the SLO and have a price; the fewest-devices choice is the fewest GPUs (ties: the cheaper) or, without a
target, the most capacity per device.

This module reads plans duck-typed (it imports no result type, so ``result`` can import it);
``cost_vs_p99`` re-runs the policy search (``recommend``) for the chart of ``plan --plot``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

from ..profiles import Profile, ProfileRegistry
from .device import batch_time
from .pricing import (
    PRICE_FIX,
    Price,
    check_price_names,
    hourly_cost,
    parse_prices,
    price_for,
    price_of,
    unpriced_reason,
)
from .recommend import Recommender

# the pricing names are part of this module's surface too (planner, result and the CLI import them from here)
__all__ = ["ALL", "P99_FACTORS", "PRICE_FIX", "Bill", "BillLine", "CostPoint", "Price", "bill_line",
           "check_price_names", "cost_vs_p99", "expand_profiles", "hourly_cost", "line_for", "make_bill",
           "parse_prices", "price_for", "price_of", "unpriced_reason"]

SECONDS_PER_HOUR = 3600.0
PER = 1e6  # cost per million inferences
ALL = "all"  # --profile all: every concrete profile but the cpu kind (see expand_profiles)
P99_FACTORS = (0.1, 0.25, 0.5, 1.0, 2.0)  # cost_vs_p99: p99 targets as multiples of the planned one


# -- which profiles -------------------------------------------------------------------------------------
def expand_profiles(spec: str | Sequence[str], profiles_dirs: Sequence[str] = ()) -> list[str]:
    """``all`` in a --profile list -> every concrete profile the registry knows (shipped and user folders),
    except the cpu kind: its figures describe the host running the planner, not hardware one buys (name
    ``cpu`` explicitly to plan it). Other names pass through, in order, without duplicates."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    if ALL not in names:
        return names
    registry = ProfileRegistry(profiles_dirs)
    good, bad = registry.load_all()
    if bad:
        raise bad[0]
    everything = [p.name for p in good if p.kind != "cpu"]
    out: list[str] = []
    for n in names:
        for m in (everything if n == ALL else [n]):
            if m not in out:
                out.append(m)
    return out


# -- the bill -------------------------------------------------------------------------------------------
@dataclasses.dataclass
class BillLine:
    """One profile's bill. With a target: for the target rate; without: one GPU at its capacity."""

    profile: str
    precision: str
    kind: str
    meets_slo: bool
    devices: int | None  # GPUs (or Jetson modules) needed; None without a target rate or when infeasible
    capacity_rps: float | None  # one device, within the p99
    p99_s: float | None  # simulated p99 of the chosen policy
    price: Price | None
    instances: int | None = None
    usd_per_hour: float | None = None
    inferences_per_s: float | None = None
    usd_per_million: float | None = None
    target: bool = True
    why_not_ranked: str | None = None
    alternative: Price | None = None  # a secondary-source offer that would run the same GPUs for less

    @property
    def ranked(self) -> bool:
        return self.why_not_ranked is None

    @property
    def idle_gpus(self) -> int | None:
        if self.instances is None or self.devices is None or self.price is None:
            return None
        return self.instances * self.price.gpus_per_instance - self.devices

    def arithmetic(self) -> str:
        """The sum behind the figures, one line (and a cheaper secondary-source offer when there is one)."""
        text = self._sum()
        alt = self.alternative
        if alt is not None and self.devices is not None:
            usd, n = alt.cost(self.devices)
            text += (f" (cheaper in a secondary source: {n} x {alt.instance} x {_price(alt.usd_per_instance_hour)}/h = "
                     f"{_usd(usd)}/h)")
        return text

    def _sum(self) -> str:
        pr = self.price
        if not self.meets_slo or pr is None or self.usd_per_hour is None:
            return f"{self.profile}: {self.why_not_ranked}"
        rate = f"{_num(self.inferences_per_s)} req/s -> {_usd(self.usd_per_million)} per 1M"
        if not self.target:
            return (f"{self.profile}: 1 GPU x {_price(pr.usd_per_gpu_hour)}/GPU-h ({_source_short(pr)}) at its "
                    f"capacity within the p99: {rate}")
        gpus = f"{self.devices} GPU{'s' if self.devices != 1 else ''}"
        name = f"{pr.instance} (secondary source)" if pr.secondary else pr.instance
        if pr.instance is None:
            return (f"{self.profile}: {gpus} = {self.devices} x {_price(pr.usd_per_gpu_hour)}/GPU-h (user price) = "
                    f"{_usd(self.usd_per_hour)}/h; {rate}")
        if pr.gpus_per_instance == 1:
            return (f"{self.profile}: {gpus} = {self.instances} x {name} x {_price(pr.usd_per_instance_hour)}/h = "
                    f"{_usd(self.usd_per_hour)}/h; {rate}")
        idle = f", {self.idle_gpus} idle" if self.idle_gpus else ""
        return (f"{self.profile}: {gpus} -> {self.instances} x {name} ({pr.gpus_per_instance} GPUs each{idle})"
                f" x {_price(pr.usd_per_instance_hour)}/h = {_usd(self.usd_per_hour)}/h; {rate}")

    def to_dict(self) -> dict[str, Any]:
        pr = self.price
        return {"profile": self.profile, "precision": self.precision, "kind": self.kind, "meets_slo": self.meets_slo,
                "devices": self.devices, "gpus_per_instance": pr.gpus_per_instance if pr else None,
                "instances": self.instances, "idle_gpus": self.idle_gpus, "instance": pr.instance if pr else None,
                "usd_per_gpu_hour": pr.usd_per_gpu_hour if pr else None,
                "usd_per_instance_hour": pr.usd_per_instance_hour if pr else None,
                "price_source": pr.source if pr else None,
                "secondary_source": pr.secondary if pr else None,
                "secondary_alternative": self._alternative_dict(), "usd_per_hour": self.usd_per_hour,
                "inferences_per_s": self.inferences_per_s, "usd_per_million": self.usd_per_million,
                "capacity_rps": self.capacity_rps, "p99_s": self.p99_s, "ranked": self.ranked,
                "why_not_ranked": self.why_not_ranked, "arithmetic": self.arithmetic()}


    def _alternative_dict(self) -> dict[str, Any] | None:
        alt = self.alternative
        if alt is None or self.devices is None:
            return None
        usd, instances = alt.cost(self.devices)
        return {"instance": alt.instance, "gpus_per_instance": alt.gpus_per_instance,
                "usd_per_instance_hour": alt.usd_per_instance_hour, "instances": instances, "usd_per_hour": usd,
                "price_source": alt.source}


@dataclasses.dataclass
class Bill:
    target_qps: float | None
    p99: float
    lines: list[BillLine]
    skipped: list[dict[str, str]]  # profiles that could not be planned: {"profile", "reason"}
    cheapest: BillLine | None
    fewest_devices: BillLine | None
    reason: str  # why there is no cheapest choice, or which basis the ranking uses

    def to_dict(self) -> dict[str, Any]:
        return {"currency": "USD", "basis": "target" if self.target_qps else "one device at capacity",
                "target_qps": self.target_qps, "p99_s": self.p99, "lines": [ln.to_dict() for ln in self.lines],
                "skipped": list(self.skipped),
                "cheapest": _pick(self.cheapest), "fewest_devices": _pick(self.fewest_devices), "reason": self.reason}


def _pick(line: BillLine | None) -> dict[str, Any] | None:
    if line is None:
        return None
    return {"profile": line.profile, "devices": line.devices, "instances": line.instances,
            "usd_per_hour": line.usd_per_hour, "usd_per_million": line.usd_per_million, "arithmetic": line.arithmetic()}


def bill_line(pp: Any, target_qps: float | None) -> BillLine:
    """The bill of one ProfilePlan (any object with .profile, .precision and .choice)."""
    return line_for(pp.profile, pp.precision, pp.choice, target_qps)


def line_for(prof: Profile, precision: str, ch: Any, target_qps: float | None) -> BillLine:
    """The bill of one recommendation (a ``recommend.Choice``) on one profile."""
    devices = ch.replicas if ch.feasible else None
    price = price_of(prof) if target_qps is None or devices is None else price_for(prof, devices)
    line = BillLine(profile=prof.name, precision=precision, kind=prof.kind, meets_slo=bool(ch.feasible),
                    devices=devices, capacity_rps=ch.capacity or None,
                    p99_s=ch.sim.p99 if ch.sim is not None else None, price=price, target=target_qps is not None)
    if not ch.feasible:
        line.why_not_ranked = f"does not meet the SLO: {ch.reason}"
        return line
    if target_qps is not None:
        line.inferences_per_s = float(target_qps)
        if price is not None and line.devices is not None:
            line.usd_per_hour, line.instances = price.cost(line.devices)
            alt = price_for(prof, line.devices, secondary=True)
            if alt.cost(line.devices)[0] < line.usd_per_hour - 1e-9:
                line.alternative = alt
    elif price is not None and line.capacity_rps:
        line.inferences_per_s = line.capacity_rps
        line.usd_per_hour = price.usd_per_gpu_hour
    if price is None:
        line.why_not_ranked = f"no price: {unpriced_reason(prof)}; {PRICE_FIX.replace('NAME', prof.name)}"
    elif line.usd_per_hour is not None and line.inferences_per_s:
        line.usd_per_million = line.usd_per_hour / (line.inferences_per_s * SECONDS_PER_HOUR) * PER
    return line


def make_bill(result: Any) -> Bill:
    """The bill of a Plan (what plan() returned): one line per planned profile, the cheapest, the fewest."""
    target = result.target_qps
    lines = [bill_line(pp, target) for pp in result.plans]
    ok = [ln for ln in lines if ln.meets_slo]
    priced = [ln for ln in ok if ln.ranked and ln.usd_per_hour is not None]
    if target is not None:
        cheapest = min(priced, key=lambda ln: (ln.usd_per_hour, ln.devices, ln.profile), default=None)
        fewest = min(ok, key=lambda ln: (ln.devices, _inf(ln.usd_per_hour), -(ln.capacity_rps or 0.0), ln.profile),
                     default=None)
    else:
        cheapest = min(priced, key=lambda ln: (ln.usd_per_million, ln.profile), default=None)
        fewest = max(ok, key=lambda ln: (ln.capacity_rps or 0.0, -_inf(ln.usd_per_hour)), default=None)
    if not ok:
        reason = "no profile meets the SLO"
    elif not priced:
        reason = "no profile that meets the SLO has a price: give --price NAME=USD_PER_GPU_HOUR"
    elif target is not None:
        reason = "lowest $/h among the priced profiles that meet the SLO at the target rate"
    else:
        reason = "lowest $ per 1M inferences, one device at its capacity (no --target-qps)"
    return Bill(target_qps=target, p99=result.p99, lines=lines, skipped=list(getattr(result, "skipped", None) or []),
                cheapest=cheapest, fewest_devices=fewest, reason=reason)


# -- cost against the latency target (plan --plot) -------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CostPoint:
    p99_s: float  # the latency target planned for
    devices: int | None
    usd_per_hour: float | None
    usd_per_million: float | None


def cost_vs_p99(result: Any, factors: Sequence[float] = P99_FACTORS, *, requests: int = 3000,
                screen: int = 1000) -> dict[str, list[CostPoint]]:
    """Per priced profile: the bill at p99 targets ``factor x result.p99``. The planned target reuses the plan;
    the others re-run the policy search with shorter simulations, whose noise could make a looser target look
    dearer. A fleet that meets a tighter target meets a looser one, so each curve is made monotone around the
    plan: a looser target needs no more devices (no less capacity) than the plan or any tighter target, a
    tighter one no fewer than the plan. A target that no policy meets is left out."""
    target = result.target_qps
    curves: dict[str, list[CostPoint]] = {}
    for pp in result.plans:
        if price_of(pp.profile) is None or pp.memory.max_batch < 1:
            continue
        times = functools.lru_cache(maxsize=None)(lambda b, pp=pp: batch_time(pp.device, pp.curve, b))
        sizes: dict[float, float] = {}  # factor -> devices (with a target) or -capacity (without): smaller is cheaper
        for f in sorted(factors):
            if f == 1.0:
                ch = pp.choice
            else:
                rec = Recommender(pp.device, times, max_batch=pp.memory.max_batch, batched=pp.curve.batched,
                                  p99=result.p99 * f, base=pp.choice.policy or pp.profile.batch, requests=requests,
                                  screen=screen)
                ch = rec.recommend(target)
            if ch.feasible and (ch.replicas if target is not None else ch.capacity):
                sizes[f] = ch.replicas if target is not None else -ch.capacity
        planned = sizes.get(1.0)
        best = math.inf
        points = []
        for f in sorted(factors):
            size = sizes.get(f, math.inf)
            if planned is not None:
                size = min(size, planned) if f > 1.0 else (max(size, planned) if f < 1.0 else size)
            best = size = min(size, best)
            if math.isfinite(size):
                points.append(_cost_point(pp.profile, result.p99 * f, size, target))
        curves[pp.profile.name] = points
    return curves


def _cost_point(profile: Profile, p99: float, size: float, target: float | None) -> CostPoint:
    if target is not None:
        devices = int(size)
        usd_h = price_for(profile, devices).cost(devices)[0]
        return CostPoint(p99, devices, usd_h, usd_h / (target * SECONDS_PER_HOUR) * PER)
    usd_h = price_of(profile).usd_per_gpu_hour
    return CostPoint(p99, None, usd_h, usd_h / (-size * SECONDS_PER_HOUR) * PER)


# -- formatting -----------------------------------------------------------------------------------------
def _inf(x: float | None) -> float:
    return math.inf if x is None else x


def _usd(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1:
        return f"${x:,.2f}"
    return f"${x:.3g}"


def _price(x: float) -> str:
    """A unit price as given (a sourced figure is printed digit for digit)."""
    return f"${x:,.6g}"


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _source_short(pr: Price) -> str:
    return pr.instance or "user price"
