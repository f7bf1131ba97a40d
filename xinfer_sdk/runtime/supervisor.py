"""Worker supervision for the batching core: a lost worker is replaced, and no request waits forever.

A worker is *lost* when an exception escapes its loop (a ``BaseException`` from the engine, a bug outside the
per-batch error handling) or when its engine raises ``EngineFatal`` (a sticky CUDA error: the context cannot
run another batch). The batch it was running has already been answered with a 500 naming the error; the
requests still queued stay queued. Then, in a new thread:

- the lost backend is released, and a replacement is made with ``factory(i)`` + ``activate()`` + warm-up after
  a backoff of ``RESTART_BACKOFF_S`` doubling to ``RESTART_BACKOFF_MAX_S``; the thread that built it becomes
  worker ``i``. It keeps trying (at the capped backoff) until it succeeds or the model closes.
- while NO worker is healthy, one *expirer* thread answers queued requests whose deadline passes (the workers
  would have done it), and ``Model.ready`` is false;
- after ``MAX_FAILED_RESTARTS`` failed attempts in a row with no worker healthy, the model is *down*: queued
  requests fail with ``WorkersUnavailable`` (503) naming the last error, and new ones are refused at once with
  it, until a replacement comes up.

Counted in ``Stats``: ``workers_healthy``, ``worker_restarts``, ``worker_restart_failures`` (exported as
``xinfer_workers_healthy``, ``xinfer_worker_restarts_total``, ``xinfer_worker_restart_failures_total``).
Nothing here runs on the request path: the supervisor only acts when a worker is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from ..errors import InferenceError, ServerClosing, WorkersUnavailable
from .delivery import CANCELLED

if TYPE_CHECKING:
    from .backends.base import Backend
    from .batcher import Batcher

log = logging.getLogger(__name__)

#: first wait before building a replacement (seconds); doubles after each failed attempt
RESTART_BACKOFF_S = 0.5
#: the longest wait between two attempts
RESTART_BACKOFF_MAX_S = 30.0
#: failed attempts in a row (with no worker healthy) after which queued requests fail and new ones are refused
MAX_FAILED_RESTARTS = 5
#: how long ``close(timeout=None)`` waits for a replacement still being built before it returns False
CLOSE_WAIT_S = 5.0

_perf = time.perf_counter

DOWN_HINT = ("the model recovers by itself when a replacement worker starts; see the server log for the engine "
             "error, and check the device (nvidia-smi, dmesg)")


class WorkerLost(Exception):
    """Raised by ``Batcher._run`` after it answered its batch: the worker must be replaced because of ``cause``."""

    def __init__(self, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def died(model: str, index: int, exc: BaseException) -> InferenceError:
    """The error a batch gets when its worker died under it (not an engine error: a bug, a BaseException)."""
    return InferenceError(f"model '{model}': worker {index} died while running this batch ({describe(exc)}); the "
                          "worker is being replaced", hint="retry the request")


def release(model: str, index: int, backend: Backend) -> None:
    try:
        backend.deactivate()
    except Exception:  # engine teardown errors are only logged
        log.exception("%s: error while releasing the backend of worker %d", model, index)


class Supervisor:
    """Replaces the lost workers of one ``Batcher`` (its lock guards everything here)."""

    def __init__(self, batcher: Batcher):
        self.b = batcher
        self.stop = threading.Event()  # set by close(): replacements stop waiting and building
        self.threads: set[threading.Thread] = set()  # replacements not yet serving, and the expirer
        self.expirer: threading.Thread | None = None
        self._made = 0

    def _spawn(self, target, *args, name: str) -> threading.Thread:  # lock held
        t = threading.Thread(target=target, args=args, daemon=True, name=f"xinfer-{self.b.name}-{name}")
        self.threads.add(t)
        t.start()
        return t

    def make(self, index: int) -> Backend:
        """Worker ``index``'s backend: made, activated and warmed up (released again if any step raises)."""
        b = self.b
        backend = None
        try:
            backend = b._factory(index)
            backend.activate()
            if b._warmup is not None:
                b._warmup(backend)
            return backend
        except BaseException:
            if backend is not None:
                release(b.name, index, backend)
            raise

    # ------------------------------------------------------------------------------------------------
    def lost(self, index: int, cause: BaseException) -> None:
        """Worker ``index`` is gone (called by its own thread, after its backend was released)."""
        b = self.b
        why = describe(cause)
        leftovers = []
        with b._cond:
            b.backends[index] = None
            b._healthy -= 1
            st = b.stats
            st.workers_healthy = b._healthy
            st.worker_last_error = why
            if b._closing:
                if b._healthy == 0:
                    leftovers = b._drop_queue()
            else:
                self._made += 1
                self._spawn(self._replace, index, why, name=f"worker{index}-r{self._made}")
                if b._healthy == 0 and self.expirer is None:
                    self.expirer = self._spawn(self._expire_while_down, name="expirer")
            healthy = b._healthy
        log.error("%s: worker %d lost (%s); %d of %d workers healthy; %s", b.name, index, why, healthy,
                  len(b.backends), "closing, not replaced" if b._closing else "replacing it", exc_info=cause)
        if leftovers:
            b._fail(leftovers, ServerClosing(f"model '{b.name}' was closed while none of its workers was running "
                                             f"(last error: {why})"))

    def _replace(self, index: int, why: str) -> None:
        b = self.b
        me = threading.current_thread()
        delay = RESTART_BACKOFF_S
        failures = 0
        try:
            while not self.stop.wait(delay):
                try:
                    backend = self.make(index)
                except BaseException as exc:  # the engine may raise anything while starting
                    failures += 1
                    log.warning("%s: replacing worker %d failed (attempt %d, next in %gs): %s", b.name, index,
                                failures, min(delay * 2, RESTART_BACKOFF_MAX_S), describe(exc))
                    self._failed(failures, exc)
                    delay = min(delay * 2, RESTART_BACKOFF_MAX_S)
                    continue
                if not self._install(index, backend, me):
                    release(b.name, index, backend)
                    return
                log.warning("%s: worker %d replaced after %d failed attempt(s) (it was lost to %s)", b.name, index,
                            failures, why)
                b._serve(index, backend)
                return
        finally:
            with b._cond:
                self.threads.discard(me)

    def _failed(self, failures: int, exc: BaseException) -> None:
        b = self.b
        leftovers = []
        with b._cond:
            b.stats.worker_restart_failures += 1
            if failures >= MAX_FAILED_RESTARTS and b._healthy == 0 and not b._closing and b._down is None:
                b._down = (f"model '{b.name}' has no running worker: replacing it failed {failures} times in a row "
                           f"(last error: {describe(exc)})")
                b._accepting = False
                leftovers = b._drop_queue()
                msg = b._down
        if leftovers:
            b._fail(leftovers, WorkersUnavailable(msg, hint=DOWN_HINT))

    def _install(self, index: int, backend: Backend, me: threading.Thread) -> bool:
        """The replacement becomes worker ``index``; False when the model is closing (not installed)."""
        b = self.b
        with b._cond:
            if b._closing:
                return False
            b.backends[index] = backend
            b._threads[index] = me
            self.threads.discard(me)
            b._healthy += 1
            st = b.stats
            st.workers_healthy = b._healthy
            st.worker_restarts += 1
            if b._down is not None:
                b._down = None
                b._accepting = not b._intake_stopped
            b._cond.notify_all()  # the expirer steps down; queued work is looked at
        return True

    def _expire_while_down(self) -> None:
        """While no worker is healthy: answer queued requests whose deadline passed (DeadlineExceeded)."""
        b = self.b
        cond, q = b._cond, b._q
        with cond:
            try:
                while b._healthy == 0 and not b._closing:
                    now = _perf()
                    expired = []
                    keep = []
                    nxt = None
                    for r in q:
                        if r.state == CANCELLED:
                            b._queued_samples -= r.n
                            b._finish_cancelled(r)
                        elif r.deadline is not None and r.deadline <= now:
                            b._queued_samples -= r.n
                            expired.append(r)
                        else:
                            keep.append(r)
                            if r.deadline is not None and (nxt is None or r.deadline < nxt):
                                nxt = r.deadline
                    if len(keep) != len(q):
                        q.clear()
                        q.extend(keep)
                        b.stats.queue_depth = len(q)
                    if expired:
                        cond.release()
                        try:
                            b._fail(expired, None)
                        finally:
                            cond.acquire()
                        continue
                    b._idle += 1  # so enqueue() wakes us for a request with an earlier deadline
                    try:
                        cond.wait(None if nxt is None else nxt - now)
                    finally:
                        b._idle -= 1
            finally:
                self.expirer = None
                self.threads.discard(threading.current_thread())
                cond.notify_all()  # a wake-up meant for a worker may have reached us: pass it on
