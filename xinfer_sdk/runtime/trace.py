"""Where a request's time goes: NVTX ranges for Nsight Systems and an in-process stage recorder.

Two independent consumers read the batching core's stage boundaries:

* **NVTX** (``pip install nvtx``): ``push(name)`` / ``pop()`` open and close a range on the calling thread, so
  ``nsys profile xinfer-sdk serve ...`` shows queue, assembly, copies, compute and scatter per worker thread.
  Without the package both names are bound to a no-op function: the cost is one Python call per stage.
* **The recorder** (``xinfer-sdk profile``): while ``RECORDER`` is not None, the batcher hands it one record per
  batch with its ``time.perf_counter()`` stamps. ``RECORDER`` is a module global that the batcher reads once per
  batch; it is None outside a profile run.

The ranges (NVTX domain ``xinfer``; docs/profiling.md shows how to read them in Nsight Systems):

    xinfer/decode, xinfer/encode               server event loop: request decode, response encode
    xinfer/assemble, compute, scatter          worker thread, one batch
    xinfer/h2d, trt-enqueue, d2h+sync          TensorRT worker, inside xinfer/compute

Cost without ``nvtx``: 0.18-0.20 us per push + pop pair (the no-op call); with ``nvtx`` and no tool attached:
0.41 us (CI machine). ``xinfer_sdk.profiling`` holds the recorder ``xinfer-sdk profile`` installs.

The API the batching core and the server call (stable; keep the signatures):

    trace.push("xinfer/assemble"); ...; trace.pop()
    rec = trace.RECORDER
    if rec is not None:
        rec.batch(model, worker, requests, stamps)   # requests: [(t_enq, n, request_key)], stamps: dict name -> t
    rec.request(model, key, stamps)                  # server side: decode / validate / encode stamps of one request
"""

from __future__ import annotations

from typing import Any, Protocol


class Recorder(Protocol):  # pragma: no cover - a structural type
    def batch(self, model: str, worker: int, requests: list[tuple[float, int, int]],
              stamps: dict[str, float]) -> None: ...

    def request(self, model: str, key: int, stamps: dict[str, float]) -> None: ...


RECORDER: Recorder | None = None


def _noop(*_args: Any, **_kw: Any) -> None:
    return None


try:  # optional: NVTX ranges for Nsight Systems
    import nvtx as _nvtx  # type: ignore[import-not-found]
except ImportError:  # the documented default: no ranges, no cost beyond a call
    _nvtx = None

NVTX = _nvtx is not None
if _nvtx is not None:
    _DOMAIN = "xinfer"

    def push(name: str) -> None:
        _nvtx.push_range(name, domain=_DOMAIN)

    def pop() -> None:
        _nvtx.pop_range(domain=_DOMAIN)
else:
    push = _noop
    pop = _noop


def set_recorder(recorder: Recorder | None) -> Recorder | None:
    """Install (or remove, with None) the stage recorder; returns the previous one."""
    global RECORDER
    previous, RECORDER = RECORDER, recorder
    return previous


__all__ = ["NVTX", "RECORDER", "Recorder", "pop", "push", "set_recorder"]
