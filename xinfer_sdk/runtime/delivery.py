"""Requests in the batching core and how their results reach the callers.

A request carries its validated feeds, its batch size and shape signature, and a *sink*: a
``concurrent.futures.Future`` (``submit``), an asyncio future plus its loop (``infer_async``; all results of
one batch reach a loop in ONE ``call_soon_threadsafe``), a plain lock (``infer``), or a parent request (a
chunk of a request split above ``max_batch_size``).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DeadlineExceeded

_perf = time.perf_counter

# how a request's result reaches its caller
FUTURE, ASYNC, WAITER, CHILD = 0, 1, 2, 3
# request states
QUEUED, RUNNING, CANCELLED = 0, 1, 2


class Request:
    # t_enq: queued; t_run: its batch was taken by a worker; t_done: the engine returned (perf_counter seconds;
    # the server's tracing reads them). extent: its length along the padded axis when it may be padded, else None.
    __slots__ = ("feeds", "n", "sig", "t_enq", "deadline", "kind", "sink", "loop", "state", "result", "error",
                 "parent", "index", "parts", "remaining", "lock", "extent", "t_run", "t_done")

    def __init__(self, feeds: dict[str, np.ndarray], n: int, sig: tuple, kind: int, sink: Any, loop: Any,
                 deadline: float | None, t_enq: float, extent: int | None = None):
        self.feeds = feeds
        self.n = n
        self.sig = sig
        self.kind = kind
        self.sink = sink
        self.loop = loop
        self.deadline = deadline
        self.t_enq = t_enq
        self.state = QUEUED
        self.result: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None
        self.parent: Request | None = None
        self.extent = extent
        self.t_run = 0.0
        self.t_done = 0.0


def answered(r: Request) -> bool:
    """Whether a request of a batch has had its result or error (for a worker that died mid-batch)."""
    k = r.kind
    if k in (FUTURE, ASYNC):
        return r.sink.done()
    if k == CHILD:
        return r.parent.parts[r.index] is not None
    return r.result is not None or r.error is not None


def _resolve_async(items: list) -> None:
    """Runs on the caller's event loop: complete every asyncio future of one batch in one go."""
    for fut, value, exc in items:
        if not fut.done():
            if exc is None:
                fut.set_result(value)
            else:
                fut.set_exception(exc)


class Delivery:
    """Completion paths of the Batcher (mixed in; expects ``stats``, ``name``, ``layout`` and ``_cond``)."""

    def _deliver(self, reqs: Sequence[Request], results: Sequence[dict[str, np.ndarray]]) -> None:
        # Stats and in-flight are settled BEFORE callers wake, so a caller that reads model.stats() right
        # after its result sees its own request counted.
        now = _perf()
        latencies = [now - r.t_enq for r in reqs if r.kind != CHILD]
        if latencies:
            self.stats.record_done(latencies)
            self._settle(len(latencies))
        by_loop: dict[Any, list] = {}
        for r, res in zip(reqs, results):
            k = r.kind
            if k == FUTURE:
                r.sink.set_result(res)
            elif k == ASYNC:
                by_loop.setdefault(r.loop, []).append((r.sink, res, None))
            elif k == CHILD:
                self._complete_child(r, res, None)
            else:
                r.result = res
                r.sink.release()
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve_async, items)
            except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
                pass

    def _fail(self, reqs: Sequence[Request], exc: BaseException | None) -> None:
        """Complete requests with an error (exc None = their deadline passed before they could start)."""
        own = [r for r in reqs if r.kind != CHILD]
        if own:
            self.stats.record_failure(type(exc).__name__ if exc is not None else "DeadlineExceeded", len(own))
            self._settle(len(own))
        by_loop: dict[Any, list] = {}
        for r in reqs:
            e = exc if exc is not None else DeadlineExceeded(
                f"model '{self.name}': the request's deadline passed while it was queued")
            if r.kind == CHILD:
                self._complete_child(r, None, e)
            else:
                self._set_error(r, e, by_loop)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve_async, items)
            except RuntimeError:
                pass

    @staticmethod
    def _set_error(r: Request, e: BaseException, by_loop: dict[Any, list]) -> None:
        if r.kind == FUTURE:
            if r.sink.set_running_or_notify_cancel() if r.state == QUEUED else True:
                try:
                    r.sink.set_exception(e)
                except concurrent.futures.InvalidStateError:
                    pass
        elif r.kind == ASYNC:
            by_loop.setdefault(r.loop, []).append((r.sink, None, e))
        else:
            r.error = e
            r.sink.release()

    def _complete_child(self, child: Request, result: dict[str, np.ndarray] | None,
                        error: BaseException | None) -> None:
        parent = child.parent
        with parent.lock:
            parent.parts[child.index] = error if error is not None else result
            parent.remaining -= 1
            if parent.remaining:
                return
        parent.t_done = child.t_done  # the last chunk's engine run ended
        errors = [p for p in parent.parts if isinstance(p, BaseException)]
        if errors:
            self._fail([parent], errors[0])
            return
        merged = self.layout.merge(parent.parts)
        parent.state = RUNNING
        self._deliver([parent], [merged])

    def _done_without_result(self, r: Request) -> None:
        """A caller cancelled its future before the batch ran."""
        self.stats.record_failure("Cancelled")
        self._settle(1)

    def _settle(self, n: int) -> None:
        with self._cond:
            self._in_flight -= n
            self.stats.in_flight = self._in_flight
            if self._in_flight <= 0:
                self._in_flight = 0
                if self._drain_waiters:
                    self._cond.notify_all()

