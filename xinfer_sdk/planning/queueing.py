"""Discrete-event simulation of OUR batching core under Poisson arrivals.

The dispatch rules are those of ``xinfer_sdk.runtime.batcher`` (Triton's dynamic batcher):

- requests (``request_size`` samples each) enter one FIFO queue; with ``max_queue_size > 0`` a request that
  finds that many requests queued is rejected at once (QueueFull); a request larger than
  ``max_batch_size`` is split into chunks that queue like any other and complete together;
- ``device_concurrency`` workers; a free worker dispatches at once when the queued samples reach
  ``max_batch_size`` (it takes that many), or reach a preferred size (it takes the largest preferred size
  it can fill); otherwise it waits until the oldest request has waited ``max_batch_delay`` and then takes
  everything queued, up to ``max_batch_size``;
- a batch of b samples occupies its worker for ``host(b)`` (per-batch overhead, per-request work,
  host<->device copies: these overlap between workers) and then ``device(b)``. On a GPU the workers
  share the device: device phases run one at a time in the order they were submitted (an engine's
  kernels fill the GPU; two execution contexts interleave theirs, which completes the same total work),
  so concurrency overlaps host work with device work but never exceeds the device's throughput. On the
  CPU the caller passes each worker's own (longer, fewer-threads) time and the workers run side by side.

Arrivals are generated from one seeded stream of unit exponentials scaled by 1/rate, so two rates see the
same arrival pattern stretched in time (common random numbers): comparisons between policies and rates
are not blurred by sampling noise.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from ..policy import BatchPolicy

INF = math.inf
EPS = 1e-9  # 1 ns: phase ends closer than this to now count as now (float time at large t)


@dataclasses.dataclass(frozen=True)
class SimResult:
    rate: float  # offered requests/s
    requests: int  # measured (after warm-up)
    p50: float
    p90: float
    p99: float
    mean: float
    mean_wait: float  # queueing delay (arrival -> dispatch), mean
    throughput: float  # completed requests/s over the measured window
    utilisation: float  # GPU: fraction of time the device computes; CPU: mean fraction of workers computing
    mean_batch: float
    rejected: float  # fraction of requests rejected (queue full)
    max_batch_seen: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def simulate(rate: float, service: Callable[[int], tuple[float, float]], policy: BatchPolicy, *,
             requests: int = 20000, warmup: float = 0.1, seed: int = 0, request_size: int = 1,
             shared_device: bool = True, record: list | None = None) -> SimResult:
    """Simulate ``requests`` Poisson arrivals at ``rate`` req/s; ``service(b) -> (host_s, device_s)``.

    ``record``: when a list is given, every dispatched batch is appended as (dispatch time, size, oldest
    request's wait) -- for tests of the dispatch rules.
    """
    if rate <= 0:
        raise ValueError("rate must be > 0")
    rng = np.random.default_rng(seed)
    arrivals = (np.cumsum(rng.exponential(1.0, requests)) / rate).tolist()
    max_b = policy.max_batch_size
    delay = policy.max_batch_delay
    prefs = sorted(p for p in policy.preferred_batch_sizes if p <= max_b)
    min_pref = prefs[0] if prefs else None
    max_queue = policy.max_queue_size
    workers = policy.device_concurrency
    cache: dict[int, tuple[float, float]] = {}

    def svc(b: int) -> tuple[float, float]:
        v = cache.get(b)
        if v is None:
            v = cache[b] = service(b)
        return v

    # queue items: [arrival time, samples, request index]; chunks of a split request share the index
    queue: deque[tuple[float, int, int]] = deque()
    chunks = [max_b] * (request_size // max_b) + ([request_size % max_b] if request_size % max_b else [])
    queued = 0
    parts_left = [1] * requests
    done_at = [INF] * requests
    dispatched_at = [INF] * requests
    rejected = [False] * requests
    # worker state: phase 0 idle, 1 host work, 2 on the device, 3 waiting for the (shared) device
    phase = [0] * workers
    t_end = [INF] * workers  # end of the current phase (phases 1 and 2)
    batch_of: list[list[int]] = [[] for _ in range(workers)]
    size_of = [0] * workers
    dev_queue: deque[int] = deque()  # workers waiting for the shared device, in submission order
    dev_busy = False
    t = 0.0
    busy_time = 0.0
    batches = 0
    samples = 0
    max_seen = 0
    nxt = 0
    n = requests

    def take(now: float) -> tuple[list[int], int] | None:
        nonlocal queued
        if queued >= max_b:
            target = max_b
        elif min_pref is not None and queued >= min_pref:
            target = max(p for p in prefs if p <= queued)
        elif now - queue[0][0] >= delay - EPS:
            target = max_b
        else:
            return None
        got: list[int] = []
        total = 0
        oldest = queue[0][0]
        while queue and total + queue[0][1] <= target:
            item = queue.popleft()
            total += item[1]
            got.append(item[2])
        queued -= total
        if record is not None:
            record.append((now, total, now - oldest))
        return got, total

    busy_w = 0  # workers not idle
    on_dev = 0  # workers in phase 2
    wr = range(workers)

    def to_device(w: int, now: float) -> None:
        nonlocal dev_busy, on_dev
        if shared_device and dev_busy:
            phase[w] = 3
            dev_queue.append(w)
            return
        dev_busy = True
        on_dev += 1
        phase[w], t_end[w] = 2, now + svc(size_of[w])[1]

    while True:
        # next event: an arrival, a worker's phase end, or the oldest request's delay expiring
        t_next = arrivals[nxt] if nxt < n else INF
        if busy_w:
            for w in wr:
                if phase[w] in (1, 2) and t_end[w] < t_next:
                    t_next = t_end[w]
        if queue and busy_w < workers and delay > 0:
            x = queue[0][0] + delay
            if x < t_next:
                t_next = x
        if t_next == INF:
            break
        if on_dev:
            dt = t_next - t
            busy_time += dt if shared_device else dt * on_dev / workers
        t = t_next
        # phase ends
        if busy_w:
            for w in wr:
                if phase[w] == 1 and t_end[w] <= t + EPS:
                    to_device(w, t)
            for w in wr:
                if phase[w] == 2 and t_end[w] <= t + EPS:
                    for r in batch_of[w]:
                        parts_left[r] -= 1
                        if parts_left[r] == 0:
                            done_at[r] = t
                    phase[w] = 0
                    on_dev -= 1
                    busy_w -= 1
                    batch_of[w] = []
                    dev_busy = False
                    if dev_queue:
                        to_device(dev_queue.popleft(), t)
        # arrivals at t
        while nxt < n and arrivals[nxt] <= t:
            a = arrivals[nxt]
            if max_queue and len(queue) + len(chunks) > max_queue:
                rejected[nxt] = True
            else:
                parts_left[nxt] = len(chunks)
                for c in chunks:
                    queue.append((a, c, nxt))
                    queued += c
            nxt += 1
        # free workers take batches
        if queue and busy_w < workers:
            for w in wr:
                if phase[w] != 0:
                    continue
                got = take(t)
                if got is None:
                    break
                reqs, total = got
                for r in reqs:
                    if dispatched_at[r] == INF:
                        dispatched_at[r] = t
                batch_of[w] = reqs
                size_of[w] = total
                batches += 1
                samples += total
                if total > max_seen:
                    max_seen = total
                busy_w += 1
                h = svc(total)[0]
                if h > 0:
                    phase[w], t_end[w] = 1, t + h
                else:
                    to_device(w, t)
                if not queue:
                    break
    first = int(n * warmup)
    arr = np.asarray(arrivals[first:])
    done = np.asarray(done_at[first:])
    disp = np.asarray(dispatched_at[first:])
    ok = ~np.asarray(rejected[first:]) & np.isfinite(done)
    lat = done[ok] - arr[ok]
    span = max(t - arrivals[first], 1e-12) if n > first else 1e-12
    if lat.size == 0:
        return SimResult(rate, 0, INF, INF, INF, INF, INF, 0.0, 0.0, 0.0, 1.0, 0)
    p50, p90, p99 = np.percentile(lat, [50, 90, 99])
    return SimResult(rate=rate, requests=int(lat.size), p50=float(p50), p90=float(p90), p99=float(p99),
                     mean=float(lat.mean()), mean_wait=float((disp[ok] - arr[ok]).mean()),
                     throughput=float(lat.size / span), utilisation=min(1.0, busy_time / t) if t else 0.0,
                     mean_batch=samples / max(batches, 1), rejected=float(np.mean(rejected[first:])),
                     max_batch_seen=max_seen)
