"""From a device model and an SLO to a batch policy, a per-device capacity and a replica count.

1. Candidate policies: ``max_batch_size`` in powers of two up to the largest batch that fits in memory,
   ``max_batch_delay`` in {0, 5 %, 10 %, 20 % of the p99 target}, ``device_concurrency`` 1 or 2, and
   ``preferred_batch_sizes`` either none or the efficient sizes (powers of two from the knee of the
   throughput curve up to ``max_batch_size``).
2. A candidate is *feasible* at a rate when the simulated p99 meets the target, nothing is rejected, the
   device is busy at most ``HEADROOM`` of the time, and the rate is at most ``HEADROOM`` of what the policy
   can sustain at all (Poisson bursts and the error of an estimate need room).
3. Capacity of one device = the highest Poisson rate at which some candidate is feasible (bisection).
4. Replicas for a target rate: start at ceil(target / capacity); each replica sees a Poisson stream of
   target / replicas (random load balancing splits a Poisson stream into Poisson streams); the first count
   at which some candidate is feasible wins. Among the feasible candidates the lowest p99 wins; among those
   within 10 % of it, a cap whose full batch still meets the target (a burst cannot then build an
   SLO-breaking batch), then the one with the most capacity (room for a burst).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from ..policy import BatchPolicy
from .device import BatchTime, DeviceModel, worker_service
from .queueing import SimResult, simulate

HEADROOM = 0.9  # plan a replica at no more than 90 % of the throughput its policy can sustain
SCREEN_SLACK = 1.15  # a short simulation's p99 within 15 % of the target earns a long one
CONFIRM = 4  # feasible candidates wanted from the long simulations (best screened first) ...
CONFIRM_MAX = 16  # ... trying at most this many
NEAR_BEST = 1.10  # p99 within 10 % of the best counts as equally good; then capacity decides
MAX_BATCH_CAP = 256
DELAY_FRACTIONS = (0.0, 0.05, 0.1, 0.2)


@dataclasses.dataclass(frozen=True)
class Candidate:
    policy: BatchPolicy
    sustainable: float  # req/s the policy can process at full load (no SLO), one device

    def label(self) -> str:
        p = self.policy
        pref = ",".join(map(str, p.preferred_batch_sizes)) or "-"
        return f"batch<={p.max_batch_size} delay={p.max_batch_delay * 1e3:g}ms pref={pref} workers={p.device_concurrency}"


@dataclasses.dataclass
class Choice:
    policy: BatchPolicy | None
    sim: SimResult | None
    rate: float | None  # per-replica rate it was chosen at
    replicas: int | None
    capacity: float | None  # one device, within the SLO
    capacity_policy: BatchPolicy | None
    feasible: bool
    reason: str
    tried: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.to_dict() if self.policy else None,
                "sim": self.sim.to_dict() if self.sim else None, "rate_per_replica": self.rate,
                "replicas": self.replicas, "capacity_rps": self.capacity,
                "capacity_policy": self.capacity_policy.to_dict() if self.capacity_policy else None,
                "feasible": self.feasible, "reason": self.reason, "tried": self.tried}


class Recommender:
    """Search policies for one device model; ``times(b)`` gives the single-worker BatchTime at batch b."""

    def __init__(self, dev: DeviceModel, times: Callable[[int], BatchTime], *, max_batch: int, batched: bool,
                 p99: float, base: BatchPolicy, concurrency: tuple[int, ...] | None = None, requests: int = 20000,
                 screen: int = 3000, seed: int = 0):
        self.dev, self.times, self.p99, self.base = dev, times, p99, base
        self.max_batch = max(1, min(max_batch, MAX_BATCH_CAP)) if batched else 1
        self.batched = batched
        self.requests, self.screen, self.seed = requests, min(screen, requests), seed
        if concurrency is None:
            concurrency = (1, 2) if dev.shared_device or dev.cores >= 2 else (1,)
        self.concurrency = concurrency
        self.tried: list[dict[str, Any]] = []

    # -- candidates --------------------------------------------------------------------------------------
    def knee(self) -> int:
        """Smallest batch whose per-sample throughput is within 10 % of the best (powers of two)."""
        sizes = self._sizes()
        thr = {b: b / self.times(b).device_s for b in sizes}
        best = max(thr.values())
        return next(b for b in sizes if thr[b] >= 0.9 * best)

    def _sizes(self) -> list[int]:
        sizes = [1 << k for k in range(0, 12) if (1 << k) <= self.max_batch]
        if sizes[-1] != self.max_batch:
            sizes.append(self.max_batch)
        return sizes

    def service(self, c: int) -> Callable[[int], tuple[float, float]]:
        return lambda b: worker_service(self.dev, self.times(b), c)

    def sustainable(self, policy: BatchPolicy) -> float:
        """Requests/s the policy processes with full batches (no latency target), one device.

        GPU: with two or more workers the host parts overlap and the device is the bottleneck; the host link
        and the per-request host work are shared too (the batching core's per-request work holds Python's
        GIL: one process handles at most 1 / request_overhead requests/s). CPU: the workers split the cores.
        """
        b, c = policy.max_batch_size, policy.device_concurrency
        bt = self.times(b)
        host, device = worker_service(self.dev, bt, c)
        if self.dev.shared_device:
            rate = b / (device if c >= 2 else host + device)
            if c >= 2 and bt.copy_s > 0:
                rate = min(rate, b / bt.copy_s)
            if self.dev.request_overhead.value > 0:
                rate = min(rate, 1.0 / self.dev.request_overhead.value)
            return rate
        return c * b / (host + device)

    def candidates(self) -> list[Candidate]:
        out = []
        knee = self.knee() if self.batched else 1
        for b in self._sizes():
            for c in self.concurrency:
                for frac in DELAY_FRACTIONS:
                    if b == 1 and frac > 0:
                        continue
                    delay = round(self.p99 * frac, 4)
                    prefs_options: list[tuple[int, ...]] = [()]
                    if frac > 0 and knee < b:
                        prefs_options.append(tuple(s for s in self._sizes() if knee <= s <= b))
                    for prefs in prefs_options:
                        pol = self.base.replace(max_batch_size=b, max_batch_delay=delay, device_concurrency=c,
                                                preferred_batch_sizes=prefs)
                        out.append(Candidate(pol, self.sustainable(pol)))
        return out

    # -- evaluation --------------------------------------------------------------------------------------
    def evaluate(self, cand: Candidate, rate: float, *, requests: int | None = None) -> SimResult | None:
        if rate > HEADROOM * cand.sustainable:
            return None
        pol = cand.policy
        return simulate(rate, self.service(pol.device_concurrency), pol, requests=requests or self.requests,
                        seed=self.seed, shared_device=self.dev.shared_device)

    def feasible(self, sim: SimResult | None, slack: float = 1.0) -> bool:
        return (sim is not None and sim.p99 <= self.p99 * slack and sim.rejected == 0.0
                and sim.utilisation <= HEADROOM * slack)

    def best_at(self, rate: float, cands: list[Candidate]) -> tuple[Candidate, SimResult] | None:
        """Screen every candidate with a short simulation, confirm the promising ones with a long one.

        A cap that the screen never reached gives the same trajectory for every larger cap (same delay,
        workers, no preferred sizes): those reuse the result instead of simulating again."""
        screened: list[tuple[float, Candidate]] = []
        unreached: dict[tuple, SimResult] = {}
        for cand in sorted(cands, key=lambda c: c.policy.max_batch_size):
            pol = cand.policy
            key = (pol.max_batch_delay, pol.device_concurrency)
            reuse = not pol.preferred_batch_sizes and key in unreached and rate <= HEADROOM * cand.sustainable
            sim = unreached[key] if reuse else self.evaluate(cand, rate, requests=self.screen)
            if sim is not None and not pol.preferred_batch_sizes and sim.max_batch_seen < pol.max_batch_size:
                unreached[key] = sim
            self.tried.append({"rate": rate, "policy": cand.label(), "p99_ms": None if sim is None else sim.p99 * 1e3,
                               "stage": "screen",
                               "why": "above headroom" if sim is None else ("ok" if self.feasible(sim) else "p99")})
            if self.feasible(sim, SCREEN_SLACK):
                screened.append((sim.p99, cand))
        screened.sort(key=lambda pc: pc[0])
        ok: list[tuple[Candidate, SimResult]] = []
        for _, cand in screened[:CONFIRM_MAX]:
            if len(ok) >= CONFIRM:
                break
            sim = self.evaluate(cand, rate)
            self.tried.append({"rate": rate, "policy": cand.label(), "p99_ms": sim.p99 * 1e3, "stage": "confirm",
                               "why": "ok" if self.feasible(sim) else "p99"})
            if self.feasible(sim):
                ok.append((cand, sim))
        if not ok:
            return None
        best = min(s.p99 for _, s in ok)
        near = [(c, s) for c, s in ok if s.p99 <= best * NEAR_BEST]
        # prefer caps whose full batch still meets the target (a burst then cannot make an SLO-breaking batch),
        # then the most capacity, then the smaller cap / fewer workers
        near.sort(key=lambda cs: (self._full_batch_latency(cs[0]) > self.p99, -cs[0].sustainable,
                                  cs[0].policy.max_batch_size, cs[0].policy.device_concurrency, cs[1].p99))
        return near[0]

    def capacity(self, cands: list[Candidate]) -> tuple[float, Candidate | None]:
        """Highest rate one device sustains within the SLO: bisection (short simulations) per batch cap, delay
        and worker count whose full batch still fits the target (most promising first; a candidate that
        cannot beat the best rate found is skipped); then a long simulation to confirm."""
        viable = [c for c in cands if not c.policy.preferred_batch_sizes and self._full_batch_latency(c) <= self.p99]
        viable.sort(key=lambda c: -c.sustainable)
        best_rate, best = 0.0, None
        for cand in viable:
            hi = HEADROOM * cand.sustainable
            if hi <= best_rate:
                continue
            if self.feasible(self.evaluate(cand, hi, requests=self.screen)):
                rate = hi
            else:
                lo = max(best_rate, hi * 1e-3)
                if not self.feasible(self.evaluate(cand, lo, requests=self.screen)):
                    continue
                for _ in range(7):
                    mid = math.sqrt(lo * hi)
                    if self.feasible(self.evaluate(cand, mid, requests=self.screen)):
                        lo = mid
                    else:
                        hi = mid
                rate = lo
            if rate > best_rate:
                best_rate, best = rate, cand
        if best is not None:  # confirm with the long run, stepping down 5 % at a time if noise fooled the screen
            for _ in range(10):
                if self.feasible(self.evaluate(best, best_rate)):
                    break
                best_rate *= 0.95
        return best_rate, best

    def _full_batch_latency(self, cand: Candidate) -> float:
        h, d = worker_service(self.dev, self.times(cand.policy.max_batch_size), cand.policy.device_concurrency)
        share = cand.policy.device_concurrency if self.dev.shared_device else 1
        return cand.policy.max_batch_delay + h + d * share

    # -- the answer ---------------------------------------------------------------------------------------
    def recommend(self, target: float | None) -> Choice:
        single = sum(worker_service(self.dev, self.times(1), 1))
        if single > self.p99:
            return Choice(None, None, None, None, 0.0, None, False,
                          f"even one request alone takes {single * 1e3:.3g} ms on this device, above the p99 target "
                          f"of {self.p99 * 1e3:g} ms", self.tried)
        cands = self.candidates()
        cap, cap_cand = self.capacity(cands)
        if cap_cand is None or cap <= 0:
            return Choice(None, None, None, None, 0.0, None, False,
                          "no candidate policy meets the p99 target at any rate", self.tried)
        if target is None:
            sim = self.evaluate(cap_cand, cap)
            return Choice(cap_cand.policy, sim, cap, None, cap, cap_cand.policy, True,
                          f"highest Poisson rate one device serves within p99 {self.p99 * 1e3:g} ms", self.tried)
        r = max(1, math.ceil(target / cap))
        for replicas in range(r, 2 * r + 6):
            rate = target / replicas
            got = self.best_at(rate, cands)
            if got is not None:
                cand, sim = got
                return Choice(cand.policy, sim, rate, replicas, cap, cap_cand.policy, True,
                              f"{replicas} replica(s) at {rate:{',.0f' if rate >= 100 else '.4g'}} req/s each meet p99 {self.p99 * 1e3:g} ms",
                              self.tried)
        return Choice(None, None, None, None, cap, cap_cand.policy, False,
                      f"no policy met p99 {self.p99 * 1e3:g} ms up to {2 * r + 5} replicas", self.tried)
