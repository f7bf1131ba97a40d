"""The one batching core: a bounded queue, Triton's dynamic-batcher dispatch rules, N workers.

Used by the embedded API (``Model.infer/submit/infer_async``) and by the server alike.

Dispatch (per free worker, FIFO): a batch goes out at once when the queued samples reach
``max_batch_size`` or one of ``preferred_batch_sizes`` (the largest reachable one is taken); otherwise when
the oldest request has waited ``max_batch_delay``, with everything queued up to ``max_batch_size``. Only
requests whose non-batch shapes are equal are merged; the oldest request decides the shape. A request
larger than ``max_batch_size`` is split into chunks that are queued like any other and reassembled.

Each tensor is stacked and split along its own batch axis (``TensorSpec.batch_axis``; an input without one is
shared by the batch and must be equal to merge). With a padding declaration (``Manifest.padding``), requests of
different lengths share a batch, padded to a bucket, and each caller's outputs are cropped back; which requests
and which bucket is ``PadPlan.choose``'s decision, by a cost model fitted from the batches run (see ``assemble.py``
and ``padding.py``).

Each of the ``device_concurrency`` workers is a thread that owns one backend instance (its own session /
execution context); the engines release the GIL while they run. Requests carry an optional deadline (not
started by then -> ``DeadlineExceeded``) and can be cancelled while queued. ``close()`` stops intake and
drains. Nothing busy-waits: workers sleep on one condition variable, and are only woken when there is a
decision to make.

An engine error fails only the requests of its batch. A worker whose loop dies, or whose engine raises
``EngineFatal``, is replaced by ``supervisor.Supervisor`` (backoff, restart counters, readiness, no request
left waiting when replacements keep failing); see that module.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..bundle import TensorSpec
from ..errors import EngineFatal, InferenceError, QueueFull, ServerClosing, WorkersUnavailable, XinferError
from ..policy import BatchPolicy
from . import supervisor, trace
from .assemble import layout_for
from .backends.base import Backend
from .delivery import ASYNC, CANCELLED, CHILD, FUTURE, QUEUED, RUNNING, WAITER, Delivery, Request, answered  # noqa: F401
from .padding import PadCost
from .stats import Stats
from .supervisor import DOWN_HINT, Supervisor, WorkerLost, died, release

log = logging.getLogger(__name__)

# how far past the head a worker looks for requests of the same shape
SCAN_LIMIT = 4096
# how many requests a padded head chooses its batch among (padding.PadPlan.choose)
PAD_SCAN = 256
_perf = time.perf_counter


class Batcher(Delivery):
    """Queue + workers for one model. ``factory(i)`` makes worker i's backend (activated in its thread).
    ``inputs``/``outputs`` (TensorSpecs: batch axes) and ``padding`` (the declaration) default to the manifest of
    the bundle the first backend runs, if any (else every tensor batches on axis 0 and nothing is padded)."""

    def __init__(self, factory: Callable[[int], Backend], *, policy: BatchPolicy, input_names: Sequence[str],
                 batched: bool = True, stats: Stats | None = None, warmup: Callable[[Backend], None] | None = None,
                 name: str = "model", inputs: Sequence[TensorSpec] | None = None,
                 outputs: Sequence[TensorSpec] | None = None, padding: Any = None):
        self.policy = policy
        self.batched = batched
        self.max_batch = policy.max_batch_size if batched else 1
        self.delay = policy.max_batch_delay if batched else 0.0
        self.preferred = tuple(p for p in policy.preferred_batch_sizes if p <= self.max_batch) if batched else ()
        self.min_preferred = min(self.preferred) if self.preferred else None
        self.max_queue = policy.max_queue_size
        self.default_timeout = policy.timeout
        self.names = list(input_names)
        self.stats = stats or Stats()
        self.name = name
        self._q: deque[Request] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._queued_samples = 0
        self._idle = 0  # workers waiting for any request
        self._timed = 0  # workers waiting for the oldest request's delay to pass
        self._closing = False
        self._accepting = True  # False: stop_intake(), close(), or down (every replacement failing)
        self._intake_stopped = False
        self._down: str | None = None  # why new requests are refused while no worker can be started
        self._in_flight = 0
        self._drain_waiters = 0  # threads in wait_drained(); woken when in_flight reaches 0
        self.backends: list[Backend | None] = [None] * policy.device_concurrency
        self._factory = factory
        self._warmup = warmup
        self._healthy = policy.device_concurrency  # workers with a running backend
        self.stats.workers = self.stats.workers_healthy = policy.device_concurrency
        self._sup = Supervisor(self)
        self._errors: list[BaseException] = []
        self._started = threading.Barrier(policy.device_concurrency + 1)
        self._threads = [threading.Thread(target=self._worker, args=(i,), daemon=True,
                                          name=f"xinfer-{name}-worker{i}") for i in range(policy.device_concurrency)]
        for t in self._threads:
            t.start()
        self._started.wait()
        if self._errors:
            self.close(drain=False, timeout=5)
            raise self._errors[0]
        try:
            self.layout = layout_for(self.backends[0], self.names, self.batched, self.name, inputs, outputs, padding)
            self.pad = self.layout.pad
            self.pad_cost = PadCost()  # the cost model the padded batches are chosen by (padding.py)
        except BaseException:
            self.close(drain=False, timeout=5)
            raise

    # ------------------------------------------------------------------------------------------------
    # intake
    def enqueue(self, feeds: dict[str, np.ndarray], n: int, sig: tuple, kind: int, sink: Any, loop: Any = None,
                timeout: float | None = None) -> Request:
        now = _perf()
        if timeout is None:
            timeout = self.default_timeout
        deadline = now + timeout if timeout is not None else None
        extent = None
        if self.pad is not None:
            sig, extent = self.pad.signature(feeds, sig)
        req = Request(feeds, n, sig, kind, sink, loop, deadline, now, extent)
        if n <= self.max_batch:
            items = (req,)
        else:
            items = self._split(req)
        cond = self._cond
        with cond:
            if not self._accepting:
                raise self._refusal()
            q = self._q
            if self.max_queue and len(q) + len(items) > self.max_queue:
                self.stats.record_rejected("queue_full")
                raise QueueFull(f"model '{self.name}': the queue is full ({self.max_queue} requests waiting)",
                                hint="retry later, or raise batch.max_queue_size / add workers")
            was_empty = not q
            q.extend(items)
            self._queued_samples += n
            self._in_flight += 1
            st = self.stats
            st.queue_depth = len(q)
            st.in_flight = self._in_flight
            if self._idle and (was_empty or not self._timed) or self._timed and self._ready_now():
                cond.notify()
        return req

    def _refusal(self) -> XinferError:  # lock held
        if self._down is not None and not (self._intake_stopped or self._closing):
            self.stats.record_rejected("workers_unavailable")
            return WorkersUnavailable(self._down, hint=DOWN_HINT)
        self.stats.record_rejected("closing")
        return ServerClosing(f"model '{self.name}' is shutting down and accepts no new requests")

    def _split(self, req: Request) -> tuple[Request, ...]:
        """A request above max_batch_size becomes chunks; the parent completes when all of them have."""
        chunks = []
        step = self.max_batch
        for i, start in enumerate(range(0, req.n, step)):
            stop = min(start + step, req.n)
            child = Request(self.layout.chunk(req.feeds, start, stop), stop - start, req.sig, CHILD, None,
                            None, req.deadline, req.t_enq, req.extent)
            child.parent = req
            child.index = i
            chunks.append(child)
        req.parts = [None] * len(chunks)
        req.remaining = len(chunks)
        req.lock = threading.Lock()
        return tuple(chunks)

    def cancel(self, req: Request) -> bool:
        """Withdraw a request that has not started; True if it was withdrawn."""
        with self._cond:
            if req.state != QUEUED:
                return False
            req.state = CANCELLED
            return True

    # ------------------------------------------------------------------------------------------------
    # dispatch decisions (called with the lock held)
    def _ready_now(self) -> bool:
        queued = self._queued_samples
        return queued >= self.max_batch or (self.min_preferred is not None and queued >= self.min_preferred)

    def _wait_time(self, now: float) -> float:
        """0 when a batch should go out now, else how long the oldest request may still wait."""
        if self._closing or self._ready_now():
            return 0.0
        return self.delay - (now - self._q[0].t_enq)

    def _target(self, now: float) -> int:
        queued = self._queued_samples
        if queued >= self.max_batch or self._closing:
            return self.max_batch
        if now - self._q[0].t_enq >= self.delay:
            return self.max_batch
        best = self.max_batch
        for p in self.preferred:
            if p <= queued:
                best = p
        return best

    def _take(self, now: float) -> tuple[list[Request], list[Request]]:
        """Pop one batch (same shape signature, FIFO) and the requests whose deadline passed."""
        q = self._q
        target = self._target(now)
        batch: list[Request] = []
        expired: list[Request] = []
        skipped: list[Request] = []
        total = 0
        sig = None
        scanned = 0
        cands: list[Request] | None = None  # a padded head: every queued request it can share a batch with
        while q and scanned < SCAN_LIMIT:
            r = q.popleft()
            scanned += 1
            if r.state == CANCELLED:
                self._queued_samples -= r.n
                self._finish_cancelled(r)
                continue
            if r.deadline is not None and r.deadline <= now:
                self._queued_samples -= r.n
                expired.append(r)
                continue
            if sig is None:
                sig = r.sig
                if r.extent is not None:
                    cands = []
            elif r.sig != sig:
                skipped.append(r)
                continue
            if cands is not None:
                cands.append(r)
                skipped.append(r)
                if len(cands) >= PAD_SCAN:
                    break
                continue
            if total + r.n > target:
                skipped.append(r)
                break
            batch.append(r)
            total += r.n
            self._queued_samples -= r.n
            r.state = RUNNING
            if total >= target:
                break
        if cands:
            batch = self.pad.choose(cands, target, self.pad_cost.overhead)
            for r in batch:
                self._queued_samples -= r.n
                r.state = RUNNING
            skipped = [r for r in skipped if r.state != RUNNING]
        if skipped:
            q.extendleft(reversed(skipped))
        self.stats.queue_depth = len(q)
        return batch, expired

    def _finish_cancelled(self, r: Request) -> None:
        # a withdrawn request no longer counts as in flight (lock held)
        self._in_flight -= 1
        if self._in_flight == 0 and self._drain_waiters:
            self._cond.notify_all()

    # ------------------------------------------------------------------------------------------------
    # workers
    def _worker(self, index: int) -> None:
        try:
            backend = self._sup.make(index)
        except BaseException as exc:  # reported to load() by the constructor
            self._errors.append(exc)
            self._started.wait()
            return
        self.backends[index] = backend
        self._started.wait()
        self._serve(index, backend)

    def _serve(self, index: int, backend: Backend) -> None:
        """Worker ``index``'s loop; when it dies (or the engine reports a fatal state) the supervisor replaces it."""
        cond = self._cond
        q = self._q
        batch = None
        try:
            try:
                while True:
                    with cond:
                        while True:
                            if q:
                                now = _perf()
                                wait = self._wait_time(now)
                                if wait <= 0:
                                    batch, expired = self._take(now)
                                    if batch or expired:
                                        break
                                    continue
                                self._timed += 1
                                cond.wait(wait)
                                self._timed -= 1
                            elif self._closing:
                                return
                            else:
                                self._idle += 1
                                cond.wait()
                                self._idle -= 1
                        # more work queued and another worker asleep: let it look too
                        if q and self._idle:
                            cond.notify()
                    if expired:
                        self._fail(expired, None)
                    if batch:
                        self._run(backend, batch, index, now)
                        batch = None
            finally:
                release(self.name, index, backend)
        except BaseException as exc:
            lost = exc.cause if isinstance(exc, WorkerLost) else exc
            if batch and not isinstance(exc, WorkerLost):  # died outside _run's handling: answer what is left
                self._fail([r for r in batch if not answered(r)], died(self.name, index, lost))
            self._sup.lost(index, lost)

    def _run(self, backend: Backend, batch: list[Request], index: int = 0, t_take: float = 0.0) -> None:
        live = []
        for r in batch:
            k = r.kind
            if k == FUTURE:
                if not r.sink.set_running_or_notify_cancel():
                    self._done_without_result(r)
                    continue
            elif k == ASYNC and r.sink.cancelled():
                self._done_without_result(r)
                continue
            elif k == CHILD and r.parent.state == CANCELLED:
                self._complete_child(r, None, ServerClosing("cancelled"))
                continue
            live.append(r)
        if not live:
            return
        rec = trace.RECORDER
        t0 = _perf()
        total = 0
        for r in live:
            r.t_run = t0
            total += r.n
            if r.kind == CHILD and not r.parent.t_run:  # a split request started when its first chunk did
                r.parent.t_run = t0
        try:
            trace.push("xinfer/assemble")
            try:  # one stage range open at a time; an error closes the one it happened in
                feeds, padded = self.layout.stack(live)
                t_asm = _perf()
                trace.pop()
                trace.push("xinfer/compute")
                outputs = backend.infer(feeds)
                t1 = _perf()
                trace.pop()
                trace.push("xinfer/scatter")
                results = self.layout.split(outputs, live, padded)
            except BaseException:
                trace.pop()
                raise
        except EngineFatal as exc:  # the engine cannot run another batch: fail this one, replace the worker
            self._fail(live, exc)
            raise WorkerLost(exc) from exc
        except XinferError as exc:
            self._fail(live, exc)
            return
        except Exception as exc:
            log.exception("%s: backend %s failed on a batch of %d", self.name, backend.name, len(live))
            self._fail(live, InferenceError(f"inference failed in backend '{backend.name}': {type(exc).__name__}: "
                                            f"{exc}"))
            return
        for r in live:
            r.t_done = t1
        self.stats.record_batch(total, t1 - t0, [t0 - r.t_enq for r in live])
        self._deliver(live, results)
        if live[0].extent is not None:  # padded, or alone: the worker's time for the batch teaches the cost model
            self.pad_cost.observe(self.layout.padded_tokens(feeds), sum(r.n * r.extent for r in live),
                                  _perf() - (t_take or t0))
        trace.pop()
        if rec is not None:
            rec.batch(self.name, index, [(r.t_enq, r.n, id(r)) for r in live],
                      {"take": t_take or t0, "assembled": t_asm, "computed": t1, "scattered": _perf()})

    # ------------------------------------------------------------------------------------------------
    # shutdown
    def stop_intake(self) -> None:
        with self._cond:
            self._accepting = False
            self._intake_stopped = True

    def close(self, *, drain: bool = True, timeout: float | None = None) -> bool:
        """Stop intake; with drain, every accepted request is answered first. True if all threads ended.

        With no worker running (all lost, replacements pending), queued requests fail at once (ServerClosing);
        a replacement still being built is waited for at most ``timeout`` (``supervisor.CLOSE_WAIT_S`` if None)."""
        with self._cond:
            self._accepting = False
            self._closing = True
            leftovers: list[Request] = []
            if not drain or self._healthy == 0:
                leftovers = self._drop_queue()
            workers = [t for t in self._threads if t is not threading.current_thread()]
            helpers = [t for t in self._sup.threads if t not in workers and t is not threading.current_thread()]
            self._cond.notify_all()
        self._sup.stop.set()
        if leftovers:
            why = "was closed before the request ran" if not drain else \
                f"was closed while none of its workers was running (last error: {self.stats.worker_last_error})"
            self._fail(leftovers, ServerClosing(f"model '{self.name}' {why}"))
        deadline = None if timeout is None else _perf() + timeout
        ok = True
        for t in workers + helpers:
            if deadline is not None:
                left = max(0.0, deadline - _perf())
            else:
                left = None if t in workers else supervisor.CLOSE_WAIT_S
            t.join(left)
            ok = ok and not t.is_alive()
        if not ok:
            with self._cond:
                stuck = self._drop_queue()
            if stuck:
                self._fail(stuck, ServerClosing(f"model '{self.name}': drain timeout passed before the request ran"))
        return ok

    def _drop_queue(self) -> list[Request]:
        """Empty the queue (lock held); returns the requests still waiting for an answer."""
        waiting = []
        for r in self._q:
            if r.state == QUEUED:
                waiting.append(r)
            elif r.state == CANCELLED:
                self._finish_cancelled(r)
        self._q.clear()
        self._queued_samples = 0
        self.stats.queue_depth = 0
        return waiting

    def wait_drained(self, timeout: float | None = None) -> bool:
        """Block until every accepted request has been answered; False if ``timeout`` passed first."""
        deadline = None if timeout is None else _perf() + timeout
        with self._cond:
            self._drain_waiters += 1
            try:
                while self._in_flight > 0:
                    left = None if deadline is None else deadline - _perf()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._drain_waiters -= 1

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def healthy(self) -> int:
        """Workers with a running backend now (0 while every one is lost and being replaced)."""
        return self._healthy

