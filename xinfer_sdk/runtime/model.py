"""``Model``: a loaded bundle behind the batching core. The object users hold.

    model = xs.load("resnet.xinfer")
    out = model.infer({"input": x})               # blocking
    fut = model.submit({"input": x})              # concurrent.futures.Future
    out = await model.infer_async({"input": x})   # asyncio
    model.close()                                 # or: with xs.load(...) as model
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..bundle import Bundle, TensorSpec
from ..errors import DeadlineExceeded
from ..policy import BatchPolicy
from ..profiles import Profile
from .backends.base import Backend
from .batcher import ASYNC, FUTURE, WAITER, Batcher
from .stats import Stats
from .validate import InputValidator, check_finite

log = logging.getLogger(__name__)


def _warmup_feeds(specs: list[TensorSpec], batched: bool) -> dict[str, np.ndarray]:
    feeds = {}
    for s in specs:
        shape = [1 if d < 0 else d for d in s.shape]
        dtype = np.dtype(s.dtype) if s.dtype != "bytes" else np.dtype(object)
        feeds[s.name] = np.zeros(shape, dtype=dtype)
    return feeds


class Model:
    """A bundle running on one backend with ``policy.device_concurrency`` workers. Thread-safe."""

    def __init__(self, bundle: Bundle, *, profile: Profile, backend_cls: type[Backend], backend_reason: str,
                 skipped: Mapping[str, str], device: str, threads: int | None, policy: BatchPolicy,
                 options: Mapping[str, Any] | None = None, name: str | None = None, warmup: bool = True,
                 notes: list[str] | None = None):
        self.bundle = bundle
        self.profile = profile
        self.device = device
        self.threads = threads
        self.policy = policy
        self.name = name or bundle.name
        self.version = "1"
        m = bundle.manifest
        self.inputs: list[TensorSpec] = list(m.inputs)
        self.outputs: list[TensorSpec] = list(m.outputs)
        self.max_batch_size = policy.max_batch_size if m.max_batch_size > 0 else 0
        self._validate = InputValidator(self.inputs, batched=self.max_batch_size > 0)
        self._backend_info = {"backend": backend_cls.name, "why": backend_reason, "skipped": dict(skipped)}
        self._notes = list(notes or [])
        self.stats_obj = Stats()
        opts = dict(options or {})

        def factory(i: int) -> Backend:
            return backend_cls(bundle, profile=profile, device=device, threads=threads, options=opts)

        warm: Callable[[Backend], None] | None = None
        if warmup:
            feeds = _warmup_feeds(self.inputs, self.max_batch_size > 0)

            def warm(backend: Backend) -> None:
                try:
                    backend.infer(feeds)
                except Exception as exc:  # a model with constraints on dynamic dims; the first request warms it
                    log.debug("%s: warm-up skipped (%s)", self.name, exc)

        self._batcher = Batcher(factory, policy=policy, input_names=[s.name for s in self.inputs],
                                batched=self.max_batch_size > 0, stats=self.stats_obj, warmup=warm, name=self.name)
        self._closed = False
        self._lock = threading.Lock()
        log.info("%-28s | ready: backend=%s device=%s workers=%d threads/worker=%s policy=%s",
                 f"model[{self.name}]", backend_cls.name, device, policy.device_concurrency, threads,
                 policy.to_dict())

    # ------------------------------------------------------------------------------------------------
    def validate(self, inputs: Mapping[str, Any], *, finite: bool = False) -> tuple[dict[str, np.ndarray], int, tuple]:
        """Check inputs against the IO spec (InvalidInput otherwise); returns (feeds, batch size, signature)."""
        feeds, n, sig = self._validate(inputs)
        if finite:
            check_finite(feeds)
        return feeds, n, sig

    def infer(self, inputs: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, np.ndarray]:
        """Run one request (any batch size) through the batching core and wait for its outputs."""
        feeds, n, sig = self._validate(inputs)
        lock = threading.Lock()
        lock.acquire()
        req = self._batcher.enqueue(feeds, n, sig, WAITER, lock, None, timeout)
        if timeout is None:
            lock.acquire()
        elif not lock.acquire(timeout=timeout):
            if self._batcher.cancel(req):
                self.stats_obj.record_failure("DeadlineExceeded")
                raise DeadlineExceeded(f"model '{self.name}': no result within {timeout:g}s (the request was still "
                                       "queued and has been withdrawn)")
            lock.acquire()
        if req.error is not None:
            raise req.error
        return req.result

    def submit(self, inputs: Mapping[str, Any], *, timeout: float | None = None) -> concurrent.futures.Future:
        """Queue one request; returns a Future. ``future.cancel()`` withdraws it while it is still queued."""
        feeds, n, sig = self._validate(inputs)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._batcher.enqueue(feeds, n, sig, FUTURE, fut, None, timeout)
        return fut

    async def infer_async(self, inputs: Mapping[str, Any], *, timeout: float | None = None,
                          validated: tuple | None = None) -> dict[str, np.ndarray]:
        """Await one request's outputs. Cancelling the awaiting task withdraws a still-queued request."""
        feeds, n, sig = validated if validated is not None else self._validate(inputs)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        req = self._batcher.enqueue(feeds, n, sig, ASYNC, fut, loop, timeout)
        try:
            if timeout is None:
                return await fut
            try:
                return await asyncio.wait_for(asyncio.shield(fut), timeout)
            except asyncio.TimeoutError:
                if self._batcher.cancel(req):
                    self.stats_obj.record_failure("DeadlineExceeded")
                    raise DeadlineExceeded(f"model '{self.name}': no result within {timeout:g}s") from None
                return await fut
        except asyncio.CancelledError:
            self._batcher.cancel(req)
            raise

    # ------------------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Open and at least one worker running (false while every worker is lost and being replaced)."""
        return not self._closed and self._batcher.healthy > 0

    @property
    def batcher(self) -> Batcher:
        return self._batcher

    def stats(self) -> dict[str, Any]:
        """Queue wait, compute time, batch sizes, queue depth, request counts (what /metrics exports)."""
        return self.stats_obj.snapshot()

    def describe(self) -> dict[str, Any]:
        m = self.bundle.manifest
        workers = [b.describe() for b in self._batcher.backends if b is not None]
        return {
            "name": self.name, "bundle": str(self.bundle.root), "precision": m.precision,
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "max_batch_size": self.max_batch_size, "device": self.device, **self._backend_info,
            "workers": workers, "threads_per_worker": self.threads, "policy": self.policy.to_dict(),
            "profile": self.profile.name, "built_for_profile": (m.profile or {}).get("name"), "notes": self._notes,
        }

    def stop_intake(self) -> None:
        """Refuse new requests (ServerClosing) while the accepted ones finish (used by graceful drain)."""
        self._batcher.stop_intake()

    def close(self, *, drain: bool = True, timeout: float | None = None) -> bool:
        """Stop intake and (by default) answer every accepted request first. Idempotent."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
        return self._batcher.close(drain=drain, timeout=timeout)

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Model(name={self.name!r}, backend={self._backend_info['backend']!r}, device={self.device!r}, "
                f"max_batch_size={self.max_batch_size}, workers={self.policy.device_concurrency})")
