"""The numbers the batching core records; the embedded API and the server's /metrics read the same ones.

Histograms are cumulative-bucket counters in the Prometheus sense (``le`` upper bounds), updated once per
batch under one small lock, so the hot path pays a few hundred nanoseconds and a scrape reads a consistent
snapshot.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from typing import Any

DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Histogram:
    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: Sequence[float]):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # last = +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def observe_many(self, values: Sequence[float]) -> None:
        counts, bounds = self.counts, self.bounds
        for v in values:
            counts[bisect.bisect_left(bounds, v)] += 1
        self.total += sum(values)
        self.count += len(values)

    def snapshot(self) -> dict[str, Any]:
        cumulative, acc = [], 0
        for c in self.counts:
            acc += c
            cumulative.append(acc)
        return {"buckets": list(self.bounds), "cumulative": cumulative, "sum": self.total, "count": self.count}

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding quantile q (coarse; for summaries only)."""
        if self.count == 0:
            return None
        target, acc = q * self.count, 0
        for bound, c in zip((*self.bounds, float("inf")), self.counts):
            acc += c
            if acc >= target:
                return bound
        return float("inf")


class Stats:
    """Counters of one model's batching core. Read with ``snapshot()``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.success = 0
        self.failed: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self.batches = 0
        self.samples = 0
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.queue_wait = Histogram(DURATION_BUCKETS)
        self.compute = Histogram(DURATION_BUCKETS)
        self.request = Histogram(DURATION_BUCKETS)
        self.queue_depth = 0
        self.in_flight = 0
        # workers (set by the batching core under its own lock; read without one)
        self.workers = 0
        self.workers_healthy = 0
        self.worker_restarts = 0  # replacements that came up
        self.worker_restart_failures = 0  # replacement attempts that failed (factory, activate or warm-up raised)
        self.worker_last_error = ""  # why the last worker was lost ("" = never)

    def record_batch(self, size: int, compute_s: float, waits: Sequence[float]) -> None:
        with self.lock:
            self.batches += 1
            self.samples += size
            self.batch_size.observe(size)
            self.compute.observe(compute_s)
            self.queue_wait.observe_many(waits)

    def record_done(self, latencies: Sequence[float], failures: dict[str, int] | None = None) -> None:
        with self.lock:
            self.success += len(latencies)
            self.request.observe_many(latencies)
            if failures:
                for reason, n in failures.items():
                    self.failed[reason] = self.failed.get(reason, 0) + n

    def record_failure(self, reason: str, n: int = 1) -> None:
        with self.lock:
            self.failed[reason] = self.failed.get(reason, 0) + n

    def record_rejected(self, reason: str) -> None:
        with self.lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": {"success": self.success, "failed": dict(self.failed), "rejected": dict(self.rejected)},
                "batches": self.batches,
                "samples": self.samples,
                "mean_batch_size": (self.samples / self.batches) if self.batches else 0.0,
                "queue_depth": self.queue_depth,
                "in_flight": self.in_flight,
                "workers": {"total": self.workers, "healthy": self.workers_healthy, "restarts": self.worker_restarts,
                            "restart_failures": self.worker_restart_failures,
                            "last_error": self.worker_last_error},
                "batch_size": self.batch_size.snapshot(),
                "queue_wait_s": self.queue_wait.snapshot(),
                "compute_s": self.compute.snapshot(),
                "request_s": self.request.snapshot(),
            }
