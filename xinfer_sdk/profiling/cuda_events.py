"""CUDA-event timing of a TensorRT worker's copies and compute, and how much copies overlap compute.

NOT RUN HERE: written against cuda-python's runtime API (``cudaEventCreate`` / ``cudaEventRecord`` /
``cudaEventElapsedTime``, the same module ``accel.nvidia._cudart.load()`` returns) and exercised on this
project's CPU machines only through ``overlap()``, which is plain arithmetic. On a GPU, ``xinfer-sdk profile``
hands each TensorRT worker a ``StageEvents`` (``TensorRTBackend._cuda_timer``); the backend marks
``start`` -> ``h2d`` -> ``compute`` -> ``d2h`` on its stream around each batch and calls ``done()`` after its
stream synchronize, so reading the times never waits on the GPU.

Times are milliseconds from one reference event recorded when profiling started, so the intervals of
different workers (streams) share one clock: ``overlap()`` then says which share of the copy time ran while
another worker's kernels were running — what ``device_concurrency >= 2`` is meant to buy.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ..accel.nvidia._cudart import check

#: the marks one batch records, in order; stage i runs from MARKS[i] to MARKS[i + 1]
MARKS = ("start", "h2d", "compute", "d2h")
STAGES = ("h2d", "compute", "d2h")


class Clock:
    """The reference event every worker's times are measured from (one per device)."""

    def __init__(self, cudart: Any, stream: Any = 0):
        self.cudart = cudart
        self.ref = check(cudart.cudaEventCreate(), "cudaEventCreate")
        check(cudart.cudaEventRecord(self.ref, stream), "cudaEventRecord")


class StageEvents:
    """One worker's events: ``mark(name, stream)`` per stage boundary, ``done()`` after the stream synchronize."""

    def __init__(self, clock: Clock, worker: int):
        self.clock = clock
        self.cudart = clock.cudart
        self.worker = worker
        self.events = {m: check(self.cudart.cudaEventCreate(), "cudaEventCreate") for m in MARKS}
        self.intervals: list[tuple[int, str, float, float]] = []  # (worker, stage, start ms, end ms)
        self._lock = threading.Lock()

    def mark(self, name: str, stream: Any) -> None:
        check(self.cudart.cudaEventRecord(self.events[name], stream), f"cudaEventRecord({name})")

    def done(self) -> None:
        """Read the batch's stage times (its stream was synchronized, so the events have completed)."""
        ms = [check(self.cudart.cudaEventElapsedTime(self.clock.ref, self.events[m]), "cudaEventElapsedTime")
              for m in MARKS]
        with self._lock:
            self.intervals.extend((self.worker, s, float(ms[i]), float(ms[i + 1])) for i, s in enumerate(STAGES))

    def destroy(self) -> None:
        for ev in self.events.values():
            self.cudart.cudaEventDestroy(ev)
        self.events = {}


def _union(spans: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _covered(a: float, b: float, spans: Sequence[tuple[float, float]]) -> float:
    return sum(max(0.0, min(b, y) - max(a, x)) for x, y in spans)


def overlap(intervals: Sequence[tuple[int, str, float, float]]) -> dict[str, Any]:
    """Per stage: total ms; and the share of copy time (h2d + d2h) during which another worker computed."""
    totals = {s: 0.0 for s in STAGES}
    for _, stage, a, b in intervals:
        totals[stage] = totals.get(stage, 0.0) + (b - a)
    workers = {w for w, *_ in intervals}
    hidden = 0.0
    for w in workers:
        others = _union([(a, b) for v, s, a, b in intervals if s == "compute" and v != w])
        hidden += sum(_covered(a, b, others) for v, s, a, b in intervals if v == w and s in ("h2d", "d2h"))
    copies = totals["h2d"] + totals["d2h"]
    return {"ms": totals, "copy_ms": copies, "copy_overlapped_ms": hidden,
            "copy_overlap_share": hidden / copies if copies > 0 else None, "workers": len(workers)}


__all__ = ["MARKS", "STAGES", "Clock", "StageEvents", "overlap"]
