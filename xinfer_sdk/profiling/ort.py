"""ONNX Runtime's own op-level profile (``SessionOptions.enable_profiling``), on the batcher's clock.

``profiling_backend(cls, folder)`` makes a subclass of the ONNX Runtime backend whose sessions write a profile
into ``folder``; ``collect(model)`` ends profiling on every worker's session and returns its events with their
start moved onto ``time.perf_counter()``. ONNX Runtime stamps events in microseconds from the session's
profiling start, which ``get_profiling_start_time_ns()`` gives on the wall clock (``time.time_ns()``; checked on
ONNX Runtime 1.32 against a ``run()`` bracketed by ``perf_counter``: within 0.1 ms); ``wall_to_perf()`` is the
offset between the two clocks, read once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

log = logging.getLogger(__name__)

#: ORT event names that are not a kernel: the per-run envelope we keep, the per-node fences we drop
RUN_EVENT = "model_run"
_KERNEL_SUFFIX = "_kernel_time"


@dataclasses.dataclass(frozen=True)
class OrtEvent:
    worker: int
    name: str  # node name (without ORT's "_kernel_time" suffix) or "model_run"
    op: str  # op type ("Gemm", "Conv", "MemcpyToHost"); "" for model_run
    provider: str
    start: float  # perf_counter seconds
    dur: float  # seconds


def wall_to_perf() -> float:
    """Seconds to add to a ``time.time()`` reading to get the ``time.perf_counter()`` reading of that moment."""
    best = None
    for _ in range(5):  # the pair with the shortest gap between the two reads
        a = time.perf_counter()
        w = time.time()
        b = time.perf_counter()
        if best is None or b - a < best[0]:
            best = (b - a, (a + b) / 2 - w)
    return best[1]


def profiling_backend(base: type, folder: str) -> type:
    """A subclass of ONNX Runtime backend ``base`` whose sessions profile into ``folder``."""

    class ProfilingOnnxRuntimeBackend(base):  # type: ignore[misc, valid-type]
        profile_dir = folder

        def _session(self, ort: Any, so: Any, chain: list[Any]) -> Any:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(self.profile_dir, f"ort-{os.getpid()}-{id(self):x}")
            return super()._session(ort, so, chain)

    ProfilingOnnxRuntimeBackend.__name__ = f"Profiling{base.__name__}"
    return ProfilingOnnxRuntimeBackend


def collect(backends: list[Any], offset: float | None = None) -> list[OrtEvent]:
    """End profiling on every worker's session; their kernel and run events, on the perf_counter clock."""
    offset = wall_to_perf() if offset is None else offset
    events: list[OrtEvent] = []
    for worker, backend in enumerate(backends):
        session = getattr(backend, "session", None)
        if session is None:
            continue
        try:
            start_ns = session.get_profiling_start_time_ns()
            path = session.end_profiling()
        except Exception as exc:  # a session that was not made with profiling on
            log.warning("onnxruntime profile of worker %d unavailable: %s", worker, exc)
            continue
        if not path or not os.path.exists(path):
            continue
        events.extend(read(path, worker, start_ns / 1e9 + offset))
    return events


def read(path: str, worker: int, origin: float) -> list[OrtEvent]:
    """Kernel and model_run events of one ORT profile file; ``origin`` is its ts=0 on the perf_counter clock."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    out = []
    for e in raw:
        name = str(e.get("name", ""))
        if e.get("ph", "X") != "X" or "ts" not in e or "dur" not in e:
            continue
        args = e.get("args") or {}
        if e.get("cat") == "Node" and name.endswith(_KERNEL_SUFFIX):
            out.append(OrtEvent(worker, name[:-len(_KERNEL_SUFFIX)], str(args.get("op_name", "?")),
                                str(args.get("provider", "")), origin + e["ts"] / 1e6, e["dur"] / 1e6))
        elif e.get("cat") == "Session" and name == RUN_EVENT:
            out.append(OrtEvent(worker, RUN_EVENT, "", "", origin + e["ts"] / 1e6, e["dur"] / 1e6))
    return out


__all__ = ["OrtEvent", "collect", "profiling_backend", "read", "wall_to_perf"]
