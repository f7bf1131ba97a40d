"""In-process load generator: closed loop (N callers, one request each at a time) or open loop (Poisson or
fixed-rate arrivals), for a duration; reports throughput, p50/p90/p99 latency and errors by type.

The core knows nothing of the transport: it drives a *sender*, a callable that starts one request and
returns a ``concurrent.futures.Future`` or an awaitable. ``model_sender(model, inputs)`` makes one for an
embedded ``Model``; an HTTP/gRPC client makes another with the same shape.

    from xinfer_sdk.loadgen import closed_loop, open_loop, model_sender
    send = model_sender(model, {"input": x})
    closed_loop(send, concurrency=16, duration=5).to_dict()
    open_loop(send, rate=2000, duration=5).p99

Latency is measured from the moment a request is started to the moment its result is available to the
caller. Open loop keeps arrivals on schedule even when responses lag (no coordinated omission): each
request's latency counts from its scheduled start.

A run stops with ``TargetDown`` when, for ``give_up_after`` seconds (default 1), every request failed with a
``ConnectionError`` (the server is gone): without it a closed loop fires tens of thousands of refused
connections a second until the duration is over.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import inspect
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np

Sender = Callable[[], "concurrent.futures.Future | Awaitable[Any]"]


@dataclasses.dataclass
class LoadResult:
    mode: str  # closed | poisson | fixed
    concurrency: int | None
    rate: float | None  # offered requests/s (open loop)
    duration: float  # measured window, seconds
    sent: int
    completed: int
    errors: dict[str, int]
    throughput: float  # completed requests/s in the window
    p50: float | None
    p90: float | None
    p99: float | None
    mean: float | None
    max: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class TargetDown(RuntimeError):
    """Every request failed to connect for ``seconds``: the target stopped answering, the run was stopped."""

    def __init__(self, error: str, failures: int, seconds: float, answered: int):
        self.error, self.failures, self.seconds, self.answered = error, failures, seconds, answered
        super().__init__(f"{failures} requests in a row failed to connect ({error}) over {seconds:.1f}s, after "
                         f"{answered} answered requests")


class _Streak:
    """Consecutive connection failures; any answer (even an error status: the server is there) resets it."""

    MIN_FAILURES = 3  # a single slow failed connect does not count as "nothing but connection errors for 1 s"

    def __init__(self, give_up_after: float | None):
        self.after = give_up_after
        self.since: float | None = None
        self.count = 0
        self.answered = 0
        self.down: TargetDown | None = None

    def ok(self) -> None:
        self.answered += 1
        self.since = None

    def failed(self, exc: BaseException) -> None:
        if not isinstance(exc, ConnectionError):
            self.since = None
            return
        now = time.perf_counter()
        if self.since is None:
            self.since, self.count = now, 0
        self.count += 1
        if (self.after is not None and self.down is None and self.count >= self.MIN_FAILURES
                and now - self.since >= self.after):
            self.down = TargetDown(type(exc).__name__, self.count, now - self.since, self.answered)


def _summarise(mode: str, lat: list[float], errors: dict[str, int], sent: int, window: float, *,
               concurrency: int | None = None, rate: float | None = None) -> LoadResult:
    if lat:
        a = np.asarray(lat)
        p50, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
        mean, mx = float(a.mean()), float(a.max())
    else:
        p50 = p90 = p99 = mean = mx = None
    return LoadResult(mode=mode, concurrency=concurrency, rate=rate, duration=window, sent=sent, completed=len(lat),
                      errors=dict(errors), throughput=len(lat) / window if window > 0 else 0.0, p50=p50, p90=p90,
                      p99=p99, mean=mean, max=mx)


async def _await(obj: Any) -> Any:
    if isinstance(obj, concurrent.futures.Future):
        return await asyncio.wrap_future(obj)
    if inspect.isawaitable(obj):
        return await obj
    return obj  # a synchronous sender that already returned its result


def _run(coro):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    raise RuntimeError("the load generator runs its own event loop; call the *_async variant from async code")


# ----------------------------------------------------------------------------------------------------------
async def closed_loop_async(send: Sender, *, concurrency: int, duration: float, warmup: float = 0.5,
                            give_up_after: float | None = 1.0) -> LoadResult:
    """``concurrency`` callers each send a request, wait for it, and send the next, for ``duration`` seconds
    after ``warmup`` seconds (requests started in the warm-up are not counted). Raises ``TargetDown`` after
    ``give_up_after`` seconds of nothing but connection errors (None: never)."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    start = time.perf_counter()
    t_measure = start + warmup
    t_end = t_measure + duration
    lat: list[float] = []
    errors: dict[str, int] = {}
    streak = _Streak(give_up_after)
    sent = 0

    async def caller() -> None:
        nonlocal sent
        while streak.down is None:
            t0 = time.perf_counter()
            if t0 >= t_end:
                return
            counted = t0 >= t_measure
            sent += counted
            try:
                await _await(send())
            except Exception as exc:  # errors are results here: counted by type
                if counted:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                streak.failed(exc)
                continue
            streak.ok()
            if counted:
                lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    if streak.down is not None:
        raise streak.down
    window = time.perf_counter() - t_measure  # the last requests started before t_end finished just now
    return _summarise("closed", lat, errors, sent, max(window, 1e-9), concurrency=concurrency)


async def open_loop_async(send: Sender, *, rate: float, duration: float, poisson: bool = True, seed: int = 0,
                          warmup: float = 0.5, drain: float = 10.0, give_up_after: float | None = 1.0) -> LoadResult:
    """Requests start at ``rate`` per second (Poisson or evenly spaced) for ``warmup + duration`` seconds;
    then outstanding requests get ``drain`` seconds to finish (the rest count as 'Timeout'). Raises
    ``TargetDown`` after ``give_up_after`` seconds of nothing but connection errors (None: never)."""
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError("rate must be a positive number")
    rng = np.random.default_rng(seed)
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    t_measure = start + warmup
    t_end = t_measure + duration
    lat: list[float] = []
    errors: dict[str, int] = {}
    tasks: set[asyncio.Task] = set()
    streak = _Streak(give_up_after)
    sent = 0

    async def one(t_sched: float, counted: bool) -> None:
        try:
            await _await(send())
        except Exception as exc:
            if counted:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            streak.failed(exc)
            return
        streak.ok()
        if counted:
            lat.append(time.perf_counter() - t_sched)

    t_next = start
    while t_next < t_end and streak.down is None:
        now = time.perf_counter()
        if t_next > now:
            await asyncio.sleep(t_next - now)
        counted = t_next >= t_measure
        sent += counted
        task = loop.create_task(one(t_next, counted))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        t_next += rng.exponential(1.0 / rate) if poisson else 1.0 / rate
    if streak.down is not None:
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise streak.down
    if tasks:
        done, pending = await asyncio.wait(set(tasks), timeout=drain)
        for t in pending:
            t.cancel()
        if pending:
            errors["Timeout"] = errors.get("Timeout", 0) + len(pending)
    return _summarise("poisson" if poisson else "fixed", lat, errors, sent, duration, rate=rate)


def closed_loop(send: Sender, *, concurrency: int, duration: float, warmup: float = 0.5,
                give_up_after: float | None = 1.0) -> LoadResult:
    return _run(closed_loop_async(send, concurrency=concurrency, duration=duration, warmup=warmup,
                                  give_up_after=give_up_after))


def open_loop(send: Sender, *, rate: float, duration: float, poisson: bool = True, seed: int = 0,
              warmup: float = 0.5, drain: float = 10.0, give_up_after: float | None = 1.0) -> LoadResult:
    return _run(open_loop_async(send, rate=rate, duration=duration, poisson=poisson, seed=seed, warmup=warmup,
                                drain=drain, give_up_after=give_up_after))


def model_sender(model: Any, inputs: Mapping[str, Any], *, use_async: bool = False) -> Sender:
    """A sender for an embedded ``Model``: ``model.submit(inputs)`` (a Future), or ``infer_async``."""
    if use_async:
        return lambda: model.infer_async(inputs)
    return lambda: model.submit(inputs)
