"""Turn recorded stamps into per-request stages, a trace-event JSON and a "where the time goes" table.

A request measured by the caller from ``t_send`` to ``t_recv`` is cut at the batching core's stamps into
contiguous stages, so they nest inside the request and add up to its latency:

    validate (send -> enqueue) | queue (-> take) | assemble (-> assembled) | compute (-> computed)
    | scatter (-> scattered) | deliver (-> the caller has the result)

The trace (Chrome trace-event format, which Perfetto and chrome://tracing open) has one process per view:
"requests" (one row per lane of requests that do not overlap), "batches" (one row per worker) and
"onnxruntime" (ORT's kernels, one row per worker), all on one clock (microseconds from the first stamp).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from .ort import RUN_EVENT, OrtEvent
from .recorder import BatchRecord

STAGES = ("validate", "queue", "assemble", "compute", "scatter", "deliver")
COPY_OPS = ("MemcpyToHost", "MemcpyFromHost", "Memcpy")
PID_REQUESTS, PID_BATCHES, PID_ORT = 1, 2, 3


@dataclasses.dataclass
class Sent:
    """One request as the caller saw it: perf_counter stamps, and the core's enqueue stamp when known."""
    t_send: float
    t_recv: float
    t_enq: float | None = None
    ok: bool = True


@dataclasses.dataclass
class RequestStages:
    t_send: float
    t_recv: float
    stages: list[tuple[str, float, float]]  # (name, start, end), contiguous from t_send to t_recv

    @property
    def latency(self) -> float:
        return self.t_recv - self.t_send


def request_stages(sent: Sent, batches: Sequence[BatchRecord]) -> RequestStages:
    """Cut one request at its batches' stamps (a split request ran in several: first take .. last scatter)."""
    if sent.t_enq is None or not batches:
        cuts = [("validate", sent.t_send, sent.t_enq)] if sent.t_enq is not None else []
        start = sent.t_enq if sent.t_enq is not None else sent.t_send
        return RequestStages(sent.t_send, sent.t_recv, cuts + [("core", start, sent.t_recv)])
    first = min(batches, key=lambda b: b.stamps["take"])
    last = max(batches, key=lambda b: b.stamps["scattered"])
    points = [sent.t_send, sent.t_enq, first.stamps["take"], first.stamps["assembled"], last.stamps["computed"],
              last.stamps["scattered"], sent.t_recv]
    # stamps taken on different threads can cross by a hair, and the core stamps "scattered" after it woke the
    # callers: keep the cuts in order and inside the request, so the stages nest and add up to its latency
    for i in range(1, len(points) - 1):
        points[i] = min(max(points[i], points[i - 1]), sent.t_recv)
    return RequestStages(sent.t_send, sent.t_recv, [(name, points[i], points[i + 1]) for i, name in enumerate(STAGES)])


# ---------------------------------------------------------------------------------------------------------
# trace-event JSON
def _lanes(spans: Iterable[tuple[float, float]]) -> list[int]:
    """Greedy interval packing: the lane of each span, so spans on one lane never overlap."""
    order = sorted(range(len(spans := list(spans))), key=lambda i: spans[i][0])
    ends: list[float] = []
    lane = [0] * len(spans)
    for i in order:
        a, b = spans[i]
        for j, end in enumerate(ends):
            if end <= a:
                ends[j], lane[i] = b, j
                break
        else:
            ends.append(b)
            lane[i] = len(ends) - 1
    return lane


def build_trace(requests: Sequence[RequestStages], batches: Sequence[BatchRecord], ort: Sequence[OrtEvent],
                *, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    stamps = [r.t_send for r in requests] + [b.stamps["take"] for b in batches if "take" in b.stamps] + \
        [e.start for e in ort]
    t0 = min(stamps) if stamps else 0.0

    def us(t: float) -> float:
        return round((t - t0) * 1e6, 3)

    ev: list[dict[str, Any]] = []

    def x(pid: int, tid: int, name: str, a: float, b: float, cat: str, args: dict | None = None) -> None:
        # the end is rounded as the start is, so a stage never ends past its request on the same clock tick
        e = {"name": name, "cat": cat, "ph": "X", "pid": pid, "tid": tid, "ts": us(a), "dur": round(us(b) - us(a), 3)}
        if args:
            e["args"] = args
        ev.append(e)

    def name_meta(pid: int, tid: int | None, name: str) -> None:
        if tid is None:
            ev.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": name}})
        else:
            ev.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}})

    name_meta(PID_REQUESTS, None, "xinfer requests")
    lanes = _lanes((r.t_send, r.t_recv) for r in requests)
    for lane in sorted(set(lanes)):
        name_meta(PID_REQUESTS, lane, f"lane {lane}")
    for i, (r, lane) in enumerate(zip(requests, lanes)):
        x(PID_REQUESTS, lane, "request", r.t_send, r.t_recv, "request", {"index": i, "latency_ms": r.latency * 1e3})
        for name, a, b in r.stages:
            x(PID_REQUESTS, lane, name, a, b, "stage")
    name_meta(PID_BATCHES, None, "xinfer batches")
    for w in sorted({b.worker for b in batches}):
        name_meta(PID_BATCHES, w, f"worker {w}")
    for b in batches:
        s = b.stamps
        x(PID_BATCHES, b.worker, f"batch {b.size}", s["take"], s["scattered"], "batch",
          {"samples": b.size, "requests": len(b.requests)})
        for name, k0, k1 in (("assemble", "take", "assembled"), ("compute", "assembled", "computed"),
                             ("scatter", "computed", "scattered")):
            x(PID_BATCHES, b.worker, name, s[k0], s[k1], "stage")
    if ort:
        name_meta(PID_ORT, None, "onnxruntime")
        for w in sorted({e.worker for e in ort}):
            name_meta(PID_ORT, w, f"worker {w} session")
        for e in ort:
            x(PID_ORT, e.worker, e.name if e.name == RUN_EVENT else e.op, e.start, e.start + e.dur,
              "ort", None if e.name == RUN_EVENT else {"node": e.name, "provider": e.provider})
    return {"traceEvents": ev, "displayTimeUnit": "ms", "otherData": {"clock": "perf_counter", "t0": t0,
                                                                      **(meta or {})}}


# ---------------------------------------------------------------------------------------------------------
# where the time goes
def ops_by_type(ort: Sequence[OrtEvent]) -> list[tuple[str, float, int]]:
    """(op type, total seconds, kernel count), largest first."""
    acc: dict[str, list] = {}
    for e in ort:
        if e.name != RUN_EVENT:
            a = acc.setdefault(e.op, [0.0, 0])
            a[0] += e.dur
            a[1] += 1
    return sorted(((k, v[0], v[1]) for k, v in acc.items()), key=lambda t: -t[1])


def aligned_share(ort: Sequence[OrtEvent], batches: Sequence[BatchRecord], slack: float = 2e-4) -> float | None:
    """Fraction of ORT runs that fall inside a compute span of their worker (``slack`` seconds either side):
    the check that the two clocks were merged right. None without both."""
    runs = [e for e in ort if e.name == RUN_EVENT]
    spans: dict[int, list[tuple[float, float]]] = {}
    for b in batches:
        spans.setdefault(b.worker, []).append((b.stamps["assembled"], b.stamps["computed"]))
    if not runs or not spans:
        return None
    lo = min(a for v in spans.values() for a, _ in v)
    runs = [e for e in runs if e.start >= lo - slack]  # warm-up runs before the load have no batch
    if not runs:
        return None
    inside = sum(any(a - slack <= e.start and e.start + e.dur <= b + slack for a, b in spans.get(e.worker, ()))
                 for e in runs)
    return inside / len(runs)


def summarise(requests: Sequence[RequestStages], batches: Sequence[BatchRecord], ort: Sequence[OrtEvent], *,
              top: int = 8) -> dict[str, Any]:
    """Mean milliseconds per request by stage, compute split by op type, copies; JSON-able."""
    n = len(requests)
    out: dict[str, Any] = {"requests": n, "batches": len(batches)}
    if not n:
        return out
    lat = sum(r.latency for r in requests) / n
    per: dict[str, float] = {}
    for r in requests:
        for name, a, b in r.stages:
            per[name] = per.get(name, 0.0) + (b - a)
    out["latency_ms"] = lat * 1e3
    out["stages"] = [{"stage": k, "ms": v / n * 1e3, "share": v / n / lat if lat > 0 else 0.0} for k, v in per.items()]
    if batches:
        out["mean_batch"] = sum(b.size for b in batches) / len(batches)
    window_start = min((b.stamps["take"] for b in batches), default=None)
    kernels = [e for e in ort if e.name != RUN_EVENT and (window_start is None or e.start >= window_start)]
    total = sum(e.dur for e in kernels)
    if kernels and total > 0:
        ops = ops_by_type(kernels)
        copies = sum(t for op, t, _ in ops if op in COPY_OPS)
        out["copies_share_of_compute"] = copies / total
        out["ops"] = [{"op": op, "ms_total": t * 1e3, "kernels": c, "share": t / total} for op, t, c in ops[:top]]
        out["ort_aligned"] = aligned_share(ort, batches)
    return out


__all__ = ["STAGES", "RequestStages", "Sent", "build_trace", "ops_by_type", "request_stages", "summarise"]
