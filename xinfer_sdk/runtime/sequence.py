"""Stateful sequences (Triton's sequence batcher with implicit state).

A stateful model takes its own previous state as an input and returns the next one (silero-vad: ``state`` ->
``stateN``; an LSTM: ``h``/``c`` -> ``hn``/``cn``). Clients send only the other inputs, with the KServe v2 request
parameters ``sequence_id`` (int or string), ``sequence_start`` and ``sequence_end``; the server keeps each live
sequence's state tensors, adds them to the request, and enqueues it into the model's ONE batching core, so requests
of many live sequences run as one batch stacked along the state's batch axis. The new state is kept; the caller
gets the other outputs.

- one request per sequence runs at a time; the next ones of that sequence wait, in order;
- ``sequence_start`` starts a sequence with zero state (or restarts it); a request of a sequence that is not live
  without it is refused (400, naming the id);
- ``sequence_end`` frees the state after its request; so does ``idle_timeout_s`` without a request;
- at most ``max_sequences`` live sequences (429 above; idle ones past their timeout are freed first).

The state declaration (``SequenceSpec``) comes from config.yaml ``sequence:``, the bundle manifest
``extra["sequence"]``, or is detected from the IO names (``sequence.detect``). See ``docs/sequences.md``.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..bundle import TensorSpec
from ..errors import InvalidInput, QueueFull, ServerClosing, UserError
from .delivery import CANCELLED, FUTURE, RUNNING, Request
from .sequence_spec import SequenceSpec, StatePair, detect, resolve, sequence_params
from .validate import check_finite

__all__ = ["Layout", "SequenceBatcher", "SequenceSpec", "StatePair", "Stream", "detect", "resolve", "sequence_params"]

_mono = time.monotonic

class Layout:
    """The stateful model seen by the batching core: every tensor with its batch on axis 0.

    State tensors are stacked along their own batch axis (silero's [2, batch, 128] on axis 1); inputs without a
    batch axis (a scalar sample rate) travel as a length-1 axis 0 and must be equal within a batch (the signature
    holds their value)."""

    def __init__(self, spec: SequenceSpec, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 batched_manifest: bool):
        self.spec = spec
        state_axes = {p.input: p.axis for p in spec.pairs} | {p.output: p.axis for p in spec.pairs}

        def axis_of(s: TensorSpec) -> int | None:
            if s.name in state_axes:
                return state_axes[s.name]
            if not s.shape:
                return None
            if batched_manifest:
                return s.batch_axis
            return 0 if s.shape[0] < 0 or s.shape[0] == 1 else None

        self.in_axes = {s.name: axis_of(s) for s in inputs}
        self.out_axes = {s.name: axis_of(s) for s in outputs}
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.state_inputs = {p.input for p in spec.pairs}
        self.state_outputs = {p.output for p in spec.pairs}
        self.batchable = all(a is not None or not s.shape for s, a in
                             ((s, self.in_axes[s.name]) for s in inputs))

    def to_model(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for name, x in feeds.items():
            a = self.in_axes[name]
            if a is None:
                out[name] = x[0, ...]
            elif a == 0:
                out[name] = x
            else:
                out[name] = np.ascontiguousarray(np.moveaxis(x, 0, a))
        return out

    def to_batch(self, outputs: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        res = {}
        for name, y in outputs.items():
            a = self.out_axes.get(name, 0)
            if a is None:
                res[name] = np.broadcast_to(y, (n, *np.shape(y)))
            elif a == 0:
                res[name] = y
            else:
                res[name] = np.moveaxis(y, a, 0)
        return res

    def from_batch(self, name: str, y: np.ndarray) -> np.ndarray:
        """One request's output (batch 1 on axis 0) back in the model's layout."""
        a = self.out_axes.get(name, 0)
        if a is None:
            return np.array(y[0])
        return np.ascontiguousarray(np.moveaxis(y, 0, a)) if a else y


class _Item:
    __slots__ = ("feeds", "sig", "start", "end", "timeout", "resolve", "handle")

    def __init__(self, feeds, sig, start, end, timeout, resolve, handle):
        self.feeds, self.sig, self.start, self.end = feeds, sig, start, end
        self.timeout, self.resolve, self.handle = timeout, resolve, handle


class _Seq:
    __slots__ = ("id", "state", "pending", "busy", "last", "ended")

    def __init__(self, sid: Any):
        self.id = sid
        self.state: dict[str, np.ndarray] | None = None
        self.pending: deque[_Item] = deque()
        self.busy = False
        self.last = _mono()
        self.ended = False


class SequenceBatcher:
    """Keeps each live sequence's state and runs its requests, one at a time, through the model's batching core."""

    def __init__(self, spec: SequenceSpec, layout: Layout, batcher: Any, *, name: str):
        self.spec = spec
        self.layout = layout
        self.batcher = batcher
        self.name = name
        self._cond = threading.Condition(threading.Lock())
        self._live: dict[Any, _Seq] = {}
        self._inputs = [s for s in layout.inputs if s.name not in layout.state_inputs]
        self._dtypes = {s.name: np.dtype(s.dtype) for s in self._inputs}
        self._zeros = {p.input: np.zeros(p.shape, dtype=p.dtype) for p in spec.pairs}
        self.started = self.ended = self.expired = 0
        self._closing = False
        self._waiting = 0
        self._swept = _mono()
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, daemon=True, name=f"xinfer-{name}-sequences")
        self._sweeper.start()

    def _sweep(self) -> None:
        """Frees idle sequences even when no request comes (a new one also sweeps, at most once a second)."""
        period = min(max(self.spec.idle_timeout_s / 4, 0.05), 5.0)
        while not self._stop.wait(period):
            self.expire()

    def close(self) -> None:
        """Stop intake and the idle sweeper (the model's close() calls it)."""
        self.stop_intake()
        self._stop.set()

    # ------------------------------------------------------------------------------------------------
    def submit(self, inputs: Mapping[str, Any], params: Mapping[str, Any] | None, fut: Any, loop: Any,
               timeout: float | None, *, finite: bool = False) -> Request:
        """Queue one request of a sequence; ``fut`` (an asyncio future on ``loop``) gets the non-state outputs.
        Returns a handle ``batcher.cancel()`` accepts while the request still waits. Raises InvalidInput / QueueFull
        / ServerClosing at once."""
        sid, start, end = sequence_params(params, self.name)

        def resolve(value: Any, exc: BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(_set_async, fut, value, exc)
            except RuntimeError:  # the caller's loop is closed
                pass

        return self.enqueue(sid, inputs, start=start, end=end, timeout=timeout, resolve=resolve, finite=finite)

    def enqueue(self, sid: Any, inputs: Mapping[str, Any], *, start: bool, end: bool, timeout: float | None,
                resolve: Callable[[Any, BaseException | None], None], finite: bool = False) -> Request:
        feeds, sig = self._check(inputs)
        if finite:
            check_finite(feeds)
        handle = Request({}, 1, (), FUTURE, None, None, None, 0.0)
        item = _Item(feeds, sig, start, end, timeout, resolve, handle)
        with self._cond:
            if self._closing:
                raise ServerClosing(f"model '{self.name}' is shutting down and accepts no new requests")
            now = _mono()
            if now - self._swept >= 1.0:
                self._expire_locked(now)
            seq = self._live.get(sid)
            if not start and (seq is None or seq.ended):
                raise InvalidInput(
                    f"model '{self.name}': sequence {sid!r} is not live (never started, ended, or freed after "
                    f"{self.spec.idle_timeout_s:g} s idle); send sequence_start=true on its first request")
            if seq is None:
                if len(self._live) >= self.spec.max_sequences:
                    self._expire_locked(now)
                    if len(self._live) >= self.spec.max_sequences:
                        raise QueueFull(f"model '{self.name}': {len(self._live)} sequences are live, the limit is "
                                        f"max_sequences {self.spec.max_sequences}",
                                        hint="end finished sequences (sequence_end=true), or raise "
                                             "sequence.max_sequences in config.yaml")
                seq = self._live[sid] = _Seq(sid)
            if start:
                self.started += 1
            seq.ended = end  # a start clears an earlier end; later requests without sequence_start are refused
            seq.last = now
            if seq.busy:
                seq.pending.append(item)
                self._waiting += 1
                return handle
            seq.busy = True
            handle.state = RUNNING
        try:
            self._dispatch(seq, item)
        except BaseException:
            with self._cond:
                if seq.state is None and not seq.pending and self._live.get(sid) is seq:
                    del self._live[sid]
            self._next(seq, False)
            raise
        return handle

    def _check(self, inputs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], tuple]:
        """One sample of each non-state input, in the core's axis-0 layout; and the signature of the batch."""
        if not isinstance(inputs, Mapping):
            raise InvalidInput(f"model '{self.name}': inputs must be a dict of name -> array")
        names = [s.name for s in self._inputs]
        sent_state = [n for n in inputs if n in self.layout.state_inputs]
        if sent_state:
            raise InvalidInput(f"model '{self.name}': {', '.join(map(repr, sent_state))} is the sequence state, kept "
                               "by the server between requests; send only " + ", ".join(map(repr, names)))
        missing = [n for n in names if n not in inputs]
        unknown = [n for n in inputs if n not in names]
        if missing or unknown:
            raise InvalidInput(f"model '{self.name}': " + "; ".join(
                ([f"missing input(s) {', '.join(map(repr, missing))}"] if missing else [])
                + ([f"unknown input(s) {', '.join(map(repr, unknown))}"] if unknown else []))
                + "; the stateful model takes " + ", ".join(f"{s.name} {s.dtype}{list(s.shape)}" for s in self._inputs))
        feeds: dict[str, np.ndarray] = {}
        sig = []
        for s in self._inputs:
            dtype = self._dtypes[s.name]
            arr = inputs[s.name]
            if not isinstance(arr, np.ndarray):
                try:
                    arr = np.asarray(arr, dtype=dtype)
                except (TypeError, ValueError) as exc:
                    raise InvalidInput(f"input {s.name!r}: cannot convert to {dtype} ({exc})") from None
            elif arr.dtype != dtype:
                raise InvalidInput(f"input {s.name!r}: expected dtype {dtype}, got {arr.dtype}",
                                   hint=f"convert it, e.g. x.astype(np.{dtype})")
            if arr.ndim != len(s.shape) or any(w >= 0 and w != g for w, g in zip(s.shape, arr.shape)):
                raise InvalidInput(f"input {s.name!r}: expected shape {list(s.shape)}, got {list(arr.shape)}")
            a = self.layout.in_axes[s.name]
            if a is None:
                feeds[s.name] = arr[None]
                sig.append((s.name, arr.tobytes()))
                continue
            if arr.shape[a] != 1:
                raise InvalidInput(f"input {s.name!r}: a sequence request carries one sample (dimension {a} = 1), "
                                   f"got shape {list(arr.shape)}; send each stream as its own sequence_id")
            x = np.moveaxis(arr, a, 0) if a else arr
            feeds[s.name] = x
            sig.append(x.shape[1:])
        return feeds, tuple(sig)

    def _dispatch(self, seq: _Seq, item: _Item) -> None:
        """Enqueue ``item`` (the sequence's one running request) with the sequence's state."""
        feeds = dict(item.feeds)
        state = seq.state if (seq.state is not None and not item.start) else None
        for p in self.spec.pairs:
            feeds[p.input] = state[p.input] if state is not None else self._zeros_batch(p)
        cf: concurrent.futures.Future = concurrent.futures.Future()
        cf.add_done_callback(lambda f: self._done(seq, item, f))
        self.batcher.enqueue(feeds, 1, item.sig, FUTURE, cf, None, item.timeout)

    def _zeros_batch(self, p: StatePair) -> np.ndarray:
        z = self._zeros[p.input]
        return np.moveaxis(z, p.axis, 0) if p.axis else z

    def _done(self, seq: _Seq, item: _Item, f: concurrent.futures.Future) -> None:
        exc = f.exception()
        value = None
        if exc is None:
            out = f.result()
            seq.state = {p.input: np.array(out[p.output]) for p in self.spec.pairs}
            value = {k: self.layout.from_batch(k, v) for k, v in out.items() if k not in self.layout.state_outputs}
        elif item.start:  # a failed first request leaves no state to continue from
            seq.state = None
        try:
            item.resolve(value, exc)
        finally:
            self._next(seq, item.end and exc is None)

    def _next(self, seq: _Seq, ended: bool) -> None:
        while True:
            with self._cond:
                seq.last = _mono()
                if ended and not seq.pending:
                    seq.state = None
                    if self._live.get(seq.id) is seq:
                        del self._live[seq.id]
                    self.ended += 1
                if not seq.pending:
                    seq.busy = False
                    self._cond.notify_all()
                    return
                item = seq.pending.popleft()
                self._waiting -= 1
                if item.handle.state == CANCELLED:
                    item.resolve(None, ServerClosing(f"model '{self.name}': the request was withdrawn"))
                    ended = False
                    continue
                item.handle.state = RUNNING
            try:
                self._dispatch(seq, item)
                return
            except BaseException as exc:  # refused by the core (closing, queue full): answer it, go on
                item.resolve(None, exc)
                ended = item.end

    def end(self, sid: Any) -> bool:
        """Free an idle sequence's state now (``Stream.close``); False when it is not live or still running."""
        with self._cond:
            seq = self._live.get(sid)
            if seq is None or seq.busy or seq.pending:
                return False
            del self._live[sid]
            self.ended += 1
            return True

    # ------------------------------------------------------------------------------------------------
    def expire(self) -> int:
        """Free the state of sequences idle for ``idle_timeout_s`` (called on each new sequence, and by the
        model's sweeper); returns how many were freed."""
        with self._cond:
            return self._expire_locked(_mono())

    def _expire_locked(self, now: float) -> int:
        self._swept = now
        limit = self.spec.idle_timeout_s
        old = [sid for sid, s in self._live.items() if not s.busy and not s.pending and now - s.last >= limit]
        for sid in old:
            del self._live[sid]
        self.expired += len(old)
        return len(old)

    def stop_intake(self) -> None:
        """Refuse new requests; those already accepted (also the ones waiting behind their sequence) still run."""
        with self._cond:
            self._closing = True

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no sequence has a request running or waiting; False if ``timeout`` passed first."""
        deadline = None if timeout is None else _mono() + timeout
        with self._cond:
            while any(s.busy for s in self._live.values()) or self._waiting:
                left = None if deadline is None else deadline - _mono()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 0.5)
            return True

    @property
    def waiting(self) -> int:
        """Requests accepted but waiting behind their sequence's running one (not yet in the batching core)."""
        return self._waiting

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"live": len(self._live), "started": self.started, "ended": self.ended, "expired": self.expired,
                    "waiting": self._waiting}

    def describe(self) -> dict[str, Any]:
        return {**self.spec.to_dict(), "batched": self.layout.batchable}


def _set_async(fut: Any, value: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(value)
    else:
        fut.set_exception(exc)


class Stream:
    """One sequence, embedded: ``model.stream()``; call it chunk by chunk (a Jetson audio loop).

        with model.stream() as vad:
            for chunk in mic:
                p = vad({"input": chunk, "sr": np.array(16000)})["output"]

    Each call blocks until its answer; many ``Stream`` objects (threads) batch together in the one core.
    ``close()`` ends the sequence and frees its state; ``reset()`` starts over with zero state."""

    _ids = iter(range(1, 1 << 62))
    _ids_lock = threading.Lock()

    def __init__(self, seqs: SequenceBatcher, timeout: float | None = None):
        with Stream._ids_lock:
            self.id = f"stream-{next(Stream._ids)}"
        self._seqs = seqs
        self._timeout = timeout
        self._started = False
        self._closed = False

    def __call__(self, inputs: Mapping[str, Any], *, end: bool = False) -> dict[str, np.ndarray]:
        if self._closed:
            raise UserError(f"stream {self.id} of model '{self._seqs.name}' is closed; open a new one with "
                            "model.stream()")
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def resolve(value: Any, exc: BaseException | None) -> None:
            if exc is None:
                fut.set_result(value)
            else:
                fut.set_exception(exc)

        self._seqs.enqueue(self.id, inputs, start=not self._started, end=end, timeout=self._timeout,
                           resolve=resolve)
        self._started = True
        if end:
            self._closed = True
        return fut.result()

    def reset(self) -> None:
        """The next call starts from zero state."""
        self._started = False

    def close(self) -> None:
        """End the sequence (frees its state now, not after the idle timeout)."""
        if self._closed or not self._started:
            self._closed = True
            return
        self._closed = True
        self._seqs.end(self.id)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


