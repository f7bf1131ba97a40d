"""The in-process stage recorder ``xinfer-sdk profile`` installs as ``runtime.trace.RECORDER``.

The batching core calls ``batch()`` once per batch it ran and the server front ends call ``request()`` once per
request they answered; both hand over ``time.perf_counter()`` stamps. Recording is a list append (atomic under
the GIL), so any worker thread or event loop may call it; nothing is computed until the run is over.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

#: the batch stamps the batching core hands over, in order (``runtime.batcher``)
BATCH_STAMPS = ("take", "assembled", "computed", "scattered")


@dataclasses.dataclass(frozen=True)
class BatchRecord:
    model: str
    worker: int
    requests: tuple[tuple[float, int, Any], ...]  # (t_enq, samples, request key) per request of the batch
    stamps: dict[str, float]
    thread: int

    @property
    def size(self) -> int:
        return sum(n for _, n, _ in self.requests)

    def span(self, start: str, end: str) -> tuple[float, float] | None:
        a, b = self.stamps.get(start), self.stamps.get(end)
        return None if a is None or b is None else (a, b)


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    model: str
    key: Any
    stamps: dict[str, float]


class StageRecorder:
    """Collects batch and request records (``trace.Recorder``); read ``batches`` / ``requests`` afterwards."""

    def __init__(self) -> None:
        self.batches: list[BatchRecord] = []
        self.requests: list[RequestRecord] = []

    def batch(self, model: str, worker: int, requests: list[tuple[float, int, Any]], stamps: dict[str, float]) -> None:
        self.batches.append(BatchRecord(model, int(worker), tuple((float(t), int(n), k) for t, n, k in requests),
                                        dict(stamps), threading.get_ident()))

    def request(self, model: str, key: Any, stamps: dict[str, float]) -> None:
        self.requests.append(RequestRecord(model, key, dict(stamps)))


__all__ = ["BATCH_STAMPS", "BatchRecord", "RequestRecord", "StageRecorder"]
