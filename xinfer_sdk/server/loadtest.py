"""Closed- and open-loop load on one asyncio loop, over any transport with ``async send() -> status``.

closed loop: ``concurrency`` workers, each sends its next request when the previous one is answered.
open loop: requests start at ``rate``/s (evenly spaced, or Poisson arrivals) whatever the answers do;
latency is measured from the scheduled start, so a falling-behind server shows up as latency (no
coordinated omission). Results: throughput, p50/p90/p99/max latency, errors by kind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_perf = time.perf_counter


@dataclasses.dataclass
class LoadResult:
    mode: str  # "closed" | "open"
    transport: str
    concurrency: int | None
    rate: float | None
    duration_s: float
    completed: int
    errors: dict[str, int]
    throughput: float  # successful requests per second
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _summary(mode: str, transport: str, lat: list[float], errors: dict[str, int], elapsed: float,
             concurrency: int | None, rate: float | None) -> LoadResult:
    ok = len(lat)
    if ok:
        a = np.asarray(lat) * 1e3
        p50, p90, p99 = (float(x) for x in np.percentile(a, [50, 90, 99]))
        mx, mean = float(a.max()), float(a.mean())
    else:
        p50 = p90 = p99 = mx = mean = None
    return LoadResult(mode, transport, concurrency, rate, round(elapsed, 3), ok, dict(errors),
                      ok / elapsed if elapsed > 0 else 0.0, p50, p90, p99, mx, mean)


async def closed_loop(send: Callable[[], Any], *, concurrency: int, duration: float, warmup: float = 0.5,
                      transport: str = "", progress: Callable[[float], None] | None = None) -> LoadResult:
    """``concurrency`` callers, each with one request outstanding, for ``duration`` seconds (after warm-up)."""
    lat: list[float] = []
    errors: dict[str, int] = {}
    t_start = _perf()
    t_measure = t_start + warmup
    t_end = t_measure + duration

    async def worker() -> None:
        while True:
            t0 = _perf()
            if t0 >= t_end:
                return
            status = await send()
            t1 = _perf()
            if t0 >= t_measure and t1 <= t_end:
                if status == "ok":
                    lat.append(t1 - t0)
                else:
                    errors[status] = errors.get(status, 0) + 1
            elif status != "ok" and t0 >= t_measure:
                errors[status] = errors.get(status, 0) + 1

    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    ticker = asyncio.ensure_future(_tick(progress, t_measure, duration)) if progress else None
    try:
        await asyncio.gather(*tasks)
    finally:
        if ticker is not None:
            ticker.cancel()
    return _summary("closed", transport, lat, errors, duration, concurrency, None)


async def open_loop(send: Callable[[], Any], *, rate: float, duration: float, poisson: bool = False,
                    max_outstanding: int = 10000, seed: int = 0, transport: str = "",
                    progress: Callable[[float], None] | None = None) -> LoadResult:
    """Start requests at ``rate``/s for ``duration`` s; latency counts from each request's scheduled time."""
    rng = random.Random(seed)
    lat: list[float] = []
    errors: dict[str, int] = {}
    outstanding = 0
    t_start = _perf()

    async def one(t_sched: float) -> None:
        nonlocal outstanding
        try:
            status = await send()
        except Exception as exc:  # a transport bug must not stop the run; count it
            status = type(exc).__name__
        if status == "ok":
            lat.append(_perf() - t_sched)
        else:
            errors[status] = errors.get(status, 0) + 1
        outstanding -= 1

    tasks = set()
    ticker = asyncio.ensure_future(_tick(progress, t_start, duration)) if progress else None
    t_next = t_start
    n = 0
    try:
        while True:
            gap = rng.expovariate(rate) if poisson else 1.0 / rate
            t_next += gap
            if t_next - t_start >= duration:
                break
            now = _perf()
            if t_next > now:
                await asyncio.sleep(t_next - now)
            if outstanding >= max_outstanding:
                errors["client_overload"] = errors.get("client_overload", 0) + 1
                continue
            outstanding += 1
            n += 1
            t = asyncio.ensure_future(one(t_next))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(list(tasks))
    finally:
        if ticker is not None:
            ticker.cancel()
    return _summary("open", transport, lat, errors, _perf() - t_start, None, rate)


async def _tick(progress: Callable[[float], None], t0: float, duration: float) -> None:
    while True:
        progress(min(1.0, max(0.0, (_perf() - t0) / duration)))
        await asyncio.sleep(0.2)


async def sweep(make_send: Callable[[], Any], *, concurrencies: Sequence[int] = (), rates: Sequence[float] = (),
                duration: float, poisson: bool = False, transport: str = "",
                progress: Callable[[int, int, str], None] | None = None) -> list[LoadResult]:
    """One closed-loop run per concurrency and one open-loop run per rate, with a shared transport."""
    sender = make_send()
    results = []
    steps = [("c", c) for c in concurrencies] + [("r", r) for r in rates]
    try:
        for i, (kind, v) in enumerate(steps):
            label = f"concurrency {v}" if kind == "c" else f"{v:g} req/s{' poisson' if poisson else ''}"

            def tick(frac: float, i: int = i, label: str = label) -> None:
                if progress is not None:
                    progress(int((i + frac) * 100), len(steps) * 100, label)

            if kind == "c":
                r = await closed_loop(sender.send, concurrency=int(v), duration=duration, transport=transport,
                                      progress=tick)
            else:
                r = await open_loop(sender.send, rate=float(v), duration=duration, poisson=poisson,
                                    transport=transport, progress=tick)
            results.append(r)
        if progress is not None:
            progress(len(steps) * 100, len(steps) * 100, "done")
    finally:
        await sender.close()
    return results


def plot(results: Sequence[LoadResult], path: str, title: str = "") -> str:
    """PNG of latency (p50, p99) against throughput, one point per run."""
    from .._lazy import require

    require("matplotlib", purpose="--plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    by_transport: dict[str, list[LoadResult]] = {}
    for r in results:
        if r.completed:
            by_transport.setdefault(r.transport, []).append(r)
    for name, rs in by_transport.items():
        rs = sorted(rs, key=lambda r: r.throughput)
        x = [r.throughput for r in rs]
        ax.plot(x, [r.p50_ms for r in rs], "o-", label=f"{name} p50")
        ax.plot(x, [r.p99_ms for r in rs], "s--", label=f"{name} p99")
        for r in rs:
            tag = f"c={r.concurrency}" if r.concurrency else f"{r.rate:g}/s"
            ax.annotate(tag, (r.throughput, r.p99_ms), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title or "latency vs throughput")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
