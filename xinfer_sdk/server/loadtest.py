"""Sweeps of closed- and open-loop load over a transport with ``async send() -> status`` (clients.py).

The load itself comes from ``xinfer_sdk.loadgen`` (closed loop: N callers; open loop: fixed-rate or Poisson
arrivals, latency from the scheduled start, no coordinated omission); this module adapts the transports to
it, reports milliseconds per transport, shows progress and draws the latency-vs-throughput PNG.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

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


class _Status(Exception):
    """A non-"ok" transport status, raised so the load generator counts it (by class name) as an error."""


_STATUS_TYPES: dict[str, type] = {}
# the statuses of a request that reached no server: a ConnectionError to the load generator, which stops a run
# after 1 s of nothing else (loadgen.TargetDown) instead of firing refused connections until the duration is over
CONNECTION_STATUSES = ("connection", "UNAVAILABLE")


def _raising(send: Callable[[], Any]) -> Callable[[], Any]:
    """Adapt ``async send() -> status`` to the load generator's sender (errors are exceptions there)."""

    async def sender() -> None:
        status = await send()
        if status != "ok":
            cls = _STATUS_TYPES.get(status)
            if cls is None:
                bases = (_Status, ConnectionError) if status in CONNECTION_STATUSES else (_Status,)
                cls = _STATUS_TYPES[status] = type(str(status), bases, {})
            raise cls(status)

    return sender


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1e3


def _convert(r: Any, transport: str) -> LoadResult:
    mode = "closed" if r.mode == "closed" else "open"
    return LoadResult(mode, transport, r.concurrency, r.rate, round(r.duration, 3), r.completed, dict(r.errors),
                      r.throughput, _ms(r.p50), _ms(r.p90), _ms(r.p99), _ms(r.max), _ms(r.mean))


async def closed_loop(send: Callable[[], Any], *, concurrency: int, duration: float, warmup: float = 0.5,
                      transport: str = "", progress: Callable[[float], None] | None = None) -> LoadResult:
    """``concurrency`` callers, each with one request outstanding, for ``duration`` seconds (after warm-up)."""
    from ..loadgen import closed_loop_async

    ticker = asyncio.ensure_future(_tick(progress, _perf() + warmup, duration)) if progress else None
    try:
        r = await closed_loop_async(_raising(send), concurrency=concurrency, duration=duration, warmup=warmup)
    finally:
        if ticker is not None:
            ticker.cancel()
    return _convert(r, transport)


async def open_loop(send: Callable[[], Any], *, rate: float, duration: float, poisson: bool = False, seed: int = 0,
                    warmup: float = 0.5, transport: str = "", progress: Callable[[float], None] | None = None
                    ) -> LoadResult:
    """Start requests at ``rate``/s for ``duration`` s; latency counts from each request's scheduled time."""
    from ..loadgen import open_loop_async

    ticker = asyncio.ensure_future(_tick(progress, _perf() + warmup, duration)) if progress else None
    try:
        r = await open_loop_async(_raising(send), rate=rate, duration=duration, poisson=poisson, seed=seed,
                                  warmup=warmup)
    finally:
        if ticker is not None:
            ticker.cancel()
    return _convert(r, transport)


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
