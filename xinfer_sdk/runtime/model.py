"""``Model``: a loaded bundle behind the batching core. The object users hold.

    model = xs.load("resnet.xinfer")
    out = model.infer({"input": x})               # blocking
    fut = model.submit({"input": x})              # concurrent.futures.Future
    out = await model.infer_async({"input": x})   # asyncio
    model.close()                                 # or: with xs.load(...) as model

A stateful model (``model.sequences`` is not None, see ``sequence.py``) runs through ``model.stream()``:

    with model.stream() as vad:
        p = vad({"input": chunk, "sr": np.array(16000)})["output"]

With several devices (``device="cuda:0,1"``) the one queue feeds ``device_concurrency`` workers per device;
``device_stats()`` says which device served what.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..bundle import Bundle, TensorSpec
from ..errors import DeadlineExceeded, UserError
from ..policy import BatchPolicy
from ..profiles import Profile
from .backends.base import Backend
from .batcher import ASYNC, FUTURE, WAITER, Batcher
from .devices import DeviceStats, Placed, engine_device, parse_devices
from .sequence import Layout, SequenceBatcher, SequenceSpec, Stream
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


def _axis0(specs: list[TensorSpec], axes: Mapping[str, int | None]) -> list[TensorSpec]:
    """The specs as the core sees a stateful model (``sequence.Layout``): the batch moved to axis 0; a tensor
    without a batch axis (a scalar) gains a length-1 axis 0 per request."""
    out = []
    for s in specs:
        a = axes.get(s.name, 0)
        rest = list(s.shape) if a is None else [d for i, d in enumerate(s.shape) if i != a]
        out.append(dataclasses.replace(s, shape=(-1, *rest), dim_names=(), batch_axis=0))
    return out


class Model:
    """A bundle running on one backend with ``policy.device_concurrency`` workers on each of its devices.
    Thread-safe."""

    def __init__(self, bundle: Bundle, *, profile: Profile, backend_cls: type[Backend], backend_reason: str,
                 skipped: Mapping[str, str], device: str, threads: int | None, policy: BatchPolicy,
                 options: Mapping[str, Any] | None = None, name: str | None = None, warmup: bool = True,
                 notes: list[str] | None = None, devices: list[str] | None = None,
                 sequence: SequenceSpec | None = None):
        self.bundle = bundle
        self.profile = profile
        if devices is None and "," in device:  # a Model re-made from another's ``device`` ("cuda:0,cuda:1")
            devices = parse_devices(device)
        self.devices: list[str] = list(devices or [device])
        self.device = device if len(self.devices) == 1 else ",".join(self.devices)
        self.threads = threads
        self.policy = policy
        self.name = name or bundle.name
        self.version = "1"
        m = bundle.manifest
        self.inputs: list[TensorSpec] = list(m.inputs)
        self.outputs: list[TensorSpec] = list(m.outputs)
        layout = Layout(sequence, self.inputs, self.outputs, m.max_batch_size > 0) if sequence is not None else None
        batched = layout.batchable if layout is not None else m.max_batch_size > 0
        self.max_batch_size = policy.max_batch_size if batched else 0
        self._validate = InputValidator(self.inputs, batched=m.max_batch_size > 0)
        self._backend_info = {"backend": backend_cls.name, "why": backend_reason, "skipped": dict(skipped)}
        self._notes = list(notes or [])
        self.stats_obj = Stats()
        self._device_stats = DeviceStats(self.devices)
        opts = dict(options or {})
        conc = policy.device_concurrency
        batch_input = next(((s.name, s.batch_axis) for s in self.inputs if s.batch_axis is not None), None) \
            if m.max_batch_size > 0 else None

        def factory(i: int) -> Backend:
            dev = self.devices[min(i // conc, len(self.devices) - 1)]
            inner = backend_cls(bundle, profile=profile, device=engine_device(dev), threads=threads, options=opts)
            return Placed(inner, dev, self._device_stats, batch_input, layout)

        warm: Callable[[Backend], None] | None = None
        if warmup and sequence is None:  # a stateful model's dynamic dims (audio length) have no safe guess
            feeds = _warmup_feeds(self.inputs, self.max_batch_size > 0)

            def warm(backend: Backend) -> None:
                try:
                    backend.warm(feeds) if isinstance(backend, Placed) else backend.infer(feeds)
                except Exception as exc:  # a model with constraints on dynamic dims; the first request warms it
                    log.debug("%s: warm-up skipped (%s)", self.name, exc)

        workers = policy if len(self.devices) == 1 else \
            dataclasses.replace(policy, device_concurrency=conc * len(self.devices))
        if layout is None:  # the core stacks each tensor along its own batch axis, padded as the manifest declares
            core_in, core_out, self.padding = self.inputs, self.outputs, m.padding
        else:  # a stateful model: ``Placed`` hands the core sequence.Layout's axis-0 view of every tensor
            core_in, core_out, self.padding = _axis0(self.inputs, layout.in_axes), _axis0(self.outputs,
                                                                                         layout.out_axes), None
            if m.padding:
                self._notes.append("the bundle's padding declaration is not applied: a stateful model's requests "
                                   "are batched per sequence step, unpadded")
                log.warning("%s: %s", self.name, self._notes[-1])
        self._batcher = Batcher(factory, policy=workers, input_names=[s.name for s in self.inputs],
                                batched=batched, stats=self.stats_obj, warmup=warm, name=self.name,
                                inputs=core_in, outputs=core_out, padding=self.padding)
        #: the sequence batcher of a stateful model (None: stateless); ``Service.submit`` hands requests to it
        self.sequences: SequenceBatcher | None = None
        if sequence is not None and layout is not None:
            self.sequences = SequenceBatcher(sequence, layout, self._batcher, name=self.name)
            # what clients send and get (the model metadata): the state tensors stay inside, as Triton's
            # implicit state
            self.inputs = [s for s in self.inputs if s.name not in layout.state_inputs]
            self.outputs = [s for s in self.outputs if s.name not in layout.state_outputs]
        self._closed = False
        self._lock = threading.Lock()
        log.info("%-28s | ready: backend=%s device=%s workers=%d threads/worker=%s policy=%s%s",
                 f"model[{self.name}]", backend_cls.name, self.device, workers.device_concurrency, threads,
                 policy.to_dict(), f" sequences={sequence.to_dict()}" if sequence is not None else "")

    def stream(self, *, timeout: float | None = None) -> Stream:
        """A new sequence of a stateful model, called chunk by chunk: ``out = s(inputs)``; ``s.close()`` ends it."""
        if self.sequences is None:
            raise UserError(f"model '{self.name}' is stateless (no state input/output pair declared or found); "
                            "stream() is for stateful models",
                            hint="call model.infer(...) for it, or declare its state in config.yaml: "
                                 "sequence: {state: {<state input>: <state output>}}")
        return Stream(self.sequences, timeout)

    def _stateless(self) -> None:
        if self.sequences is not None:
            raise UserError(f"model '{self.name}' is stateful: its state inputs "
                            f"({', '.join(p.input for p in self.sequences.spec.pairs)}) are kept between requests",
                            hint="use s = model.stream(); s(inputs) per chunk (or, over the server, the "
                                 "sequence_id / sequence_start / sequence_end parameters)")

    # ------------------------------------------------------------------------------------------------
    def validate(self, inputs: Mapping[str, Any], *, finite: bool = False) -> tuple[dict[str, np.ndarray], int, tuple]:
        """Check inputs against the IO spec (InvalidInput otherwise); returns (feeds, batch size, signature)."""
        feeds, n, sig = self._validate(inputs)
        if finite:
            check_finite(feeds)
        return feeds, n, sig

    def infer(self, inputs: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, np.ndarray]:
        """Run one request (any batch size) through the batching core and wait for its outputs."""
        self._stateless()
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
        self._stateless()
        feeds, n, sig = self._validate(inputs)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._batcher.enqueue(feeds, n, sig, FUTURE, fut, None, timeout)
        return fut

    async def infer_async(self, inputs: Mapping[str, Any], *, timeout: float | None = None,
                          validated: tuple | None = None) -> dict[str, np.ndarray]:
        """Await one request's outputs. Cancelling the awaiting task withdraws a still-queued request."""
        self._stateless()
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

    def device_stats(self) -> dict[str, dict[str, Any]]:
        """Which device served what: {device: {"batches": n, "inferences": samples, "compute_s": seconds}}."""
        return self._device_stats.snapshot()

    def describe(self) -> dict[str, Any]:
        m = self.bundle.manifest
        workers = [b.describe() for b in self._batcher.backends if b is not None]
        return {
            "name": self.name, "bundle": str(self.bundle.root), "precision": m.precision,
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "max_batch_size": self.max_batch_size, "device": self.device, "devices": list(self.devices),
            **self._backend_info,
            "workers": workers, "threads_per_worker": self.threads, "policy": self.policy.to_dict(),
            "profile": self.profile.name, "built_for_profile": (m.profile or {}).get("name"), "notes": self._notes,
            "sequence": self.sequences.describe() if self.sequences is not None else None,
            "padding": self.padding,
        }

    def stop_intake(self) -> None:
        """Refuse new requests (ServerClosing) while the accepted ones finish (used by graceful drain)."""
        seqs = self.sequences
        if seqs is not None:
            seqs.stop_intake()
            if seqs.waiting:  # requests waiting behind their sequence's running one still go into the core
                threading.Thread(target=self._stop_after_sequences, daemon=True,
                                 name=f"xinfer-{self.name}-seqdrain").start()
                return
        self._batcher.stop_intake()

    def _stop_after_sequences(self) -> None:
        assert self.sequences is not None
        self.sequences.wait_idle()
        self._batcher.stop_intake()

    def close(self, *, drain: bool = True, timeout: float | None = None) -> bool:
        """Stop intake and (by default) answer every accepted request first. Idempotent."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
        seqs = self.sequences
        if seqs is not None:
            seqs.close()
            if drain:  # the requests waiting behind their sequence's running one are accepted: run them too
                seqs.wait_idle(timeout)
        return self._batcher.close(drain=drain, timeout=timeout)

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Model(name={self.name!r}, backend={self._backend_info['backend']!r}, device={self.device!r}, "
                f"max_batch_size={self.max_batch_size}, workers={self.policy.device_concurrency * len(self.devices)})")
