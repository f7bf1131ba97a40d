"""Padded batching: merge requests of different lengths by padding them to a shared bucket, crop the answers.

The declaration lives in the bundle manifest (``padding:`` in xinfer.yaml, ``Manifest.padding``)::

    padding:
      inputs: {input_ids: {axis: 1, value: 0}, attention_mask: {axis: 1, value: 0}}
      buckets: [16, 32, 64, 128]
      outputs: {last_hidden_state: 1}

A request's *length* is its size along the padded axis (the same for every padded input). Requests that can be
padded (equal other shapes, a length within the buckets) may share a batch; each is padded with ``value`` up to
the smallest bucket that holds the batch's longest request. Which requests share a batch is ``PadPlan.choose``'s
decision: the oldest request and the others of its bucket, and shorter ones only where a cost model ``PadCost``
fits online from the batches already run (worker time = fixed cost + cost per padded token) says that padding
them costs less than their share of a run of their own. Every output named under ``outputs`` is cropped back along its axis
to the caller's own length; other outputs (a pooled vector) are returned as the model computed them. A request
longer than the largest bucket is not padded: it merges only with requests of exactly its shape.

Padding changes nothing only if the model ignores the padded positions (an attention mask, a causal or
per-position computation): ``converters/padding.py`` checks that at build on the eval data.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..bundle import TensorSpec
from ..errors import UserError

KEYS = ("inputs", "buckets", "outputs")
PAD = ("pad",)  # a padded dim in a request's signature: any length within the buckets
EXAMPLE = ("padding: {inputs: {input_ids: {axis: 1, value: 0}}, buckets: [16, 32, 64, 128], "
           "outputs: {last_hidden_state: 1}}")


def _err(where: str, what: str) -> UserError:
    return UserError(f"{where}: {what}", hint=f"declare it like {EXAMPLE}")


def _axis(where: str, value: Any, spec: TensorSpec, batched: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(where, f"the axis must be an integer, got {value!r}")
    rank = len(spec.shape)
    if not -rank <= value < rank:
        raise _err(where, f"axis {value} is outside {spec.name!r}'s shape {list(spec.shape)}")
    value %= rank
    if batched and value == spec.batch_axis:
        raise _err(where, f"axis {value} is {spec.name!r}'s batch axis; name its sequence axis instead")
    if spec.shape[value] >= 0:
        raise _err(where, f"axis {value} of {spec.name!r} is fixed at {spec.shape[value]} (shape "
                          f"{list(spec.shape)}); only a dynamic axis can be padded")
    return value


class PadPlan:
    """A checked padding declaration for one model: the signature of a request, padding, cropping."""

    def __init__(self, decl: Mapping[str, Any], inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], *,
                 batched: bool = True, where: str = "padding"):
        if not isinstance(decl, Mapping):
            raise _err(where, f"expected a mapping, got {type(decl).__name__}")
        for key in decl:
            if key not in KEYS:
                raise _err(f"{where}.{key}", f"unknown key (expected one of {', '.join(KEYS)})")
        ins = {s.name: s for s in inputs}
        outs = {s.name: s for s in outputs}
        raw_in = decl.get("inputs")
        if not isinstance(raw_in, Mapping) or not raw_in:
            raise _err(f"{where}.inputs", "name at least one input to pad, with its axis and pad value")
        self.inputs: dict[str, tuple[int, Any]] = {}
        for name, item in raw_in.items():
            w = f"{where}.inputs.{name}"
            if name not in ins:
                raise _err(w, f"the model has no input {name!r} (its inputs: {', '.join(ins)})")
            if isinstance(item, int) and not isinstance(item, bool):
                item = {"axis": item}
            if not isinstance(item, Mapping) or "axis" not in item or set(item) - {"axis", "value"}:
                raise _err(w, f"expected {{axis: N, value: V}}, got {item!r}")
            spec = ins[name]
            if batched and (spec.batch_axis is None or not spec.shape):
                raise _err(w, f"{name!r} has no batch axis (it is shared by a batch and must be equal to merge); "
                              "only batched inputs can be padded")
            value = item.get("value", 0)
            try:
                np.asarray(value, dtype=spec.dtype)
            except (TypeError, ValueError, OverflowError):
                raise _err(w, f"pad value {value!r} does not fit the input's dtype {spec.dtype}") from None
            self.inputs[name] = (_axis(w, item["axis"], spec, batched), value)
        buckets = decl.get("buckets")
        if (not isinstance(buckets, Sequence) or isinstance(buckets, str) or not buckets
                or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in buckets)):
            raise _err(f"{where}.buckets", f"expected a list of positive lengths such as [16, 32, 64, 128], "
                                           f"got {buckets!r}")
        self.buckets = sorted(set(buckets))
        self.outputs: dict[str, int] = {}
        for name, axis in (decl.get("outputs") or {}).items():
            w = f"{where}.outputs.{name}"
            if name not in outs:
                raise _err(w, f"the model has no output {name!r} (its outputs: {', '.join(outs)})")
            self.outputs[name] = _axis(w, axis, outs[name], batched)
        self.decl = {"inputs": {n: {"axis": a, "value": v} for n, (a, v) in self.inputs.items()},
                     "buckets": list(self.buckets), "outputs": dict(self.outputs)}
        # positions in the validator's signature (one entry per input, in spec order, batch axis left out)
        self._slots = []
        for i, spec in enumerate(inputs):
            if spec.name in self.inputs:
                axis = self.inputs[spec.name][0]
                ba = spec.batch_axis if batched else None
                self._slots.append((i, spec.name, axis, axis - 1 if ba is not None and ba < axis else axis))
        self._first = self._slots[0][1], self._slots[0][2]

    def signature(self, feeds: Mapping[str, np.ndarray], sig: tuple) -> tuple[tuple, int | None]:
        """(signature, length): the validator's signature with each padded dim replaced by a marker (so requests of
        any length within the buckets compare equal), and the request's own length; (sig, None) unchanged when it
        cannot be padded (lengths differ between the padded inputs, or beyond the largest bucket)."""
        name, axis = self._first
        length = feeds[name].shape[axis]
        for _, n, a, _ in self._slots:
            if feeds[n].shape[a] != length:
                return sig, None
        b = bisect_left(self.buckets, length)
        if b == len(self.buckets):
            return sig, None
        out = list(sig)
        for i, _, _, pos in self._slots:
            tail = out[i]
            out[i] = (*tail[:pos], PAD, *tail[pos + 1:])
        return tuple(out), length

    def choose(self, cands: Sequence[Any], room: int, overhead: float | None) -> list[Any]:
        """The requests of one batch among ``cands`` (queued requests of one padded signature, oldest first; each
        has ``.extent``, its length, and ``.n``, its samples): at most ``room`` samples, the oldest always in.

        The batch is the oldest request's bucket, oldest first (no request padded beyond its own bucket). When that
        leaves room, shorter requests of smaller buckets join it, longest first, each only if padding it up to this
        bucket costs less than half of what the run of its own bucket would charge it: ``overhead`` (the fixed
        cost of a run, in padded tokens, fitted by ``PadCost``; None: not measured yet, nobody joins) shared by
        the requests queued in that bucket. On a CPU (small fixed cost) that keeps buckets apart; on an engine
        whose runs cost about the same whatever their size, batches fill up across buckets."""
        head = cands[0]
        buckets = self.buckets
        first = bisect_left(buckets, head.extent)
        top = buckets[first]
        low = buckets[first - 1] if first else 0
        batch, rows = [head], head.n
        shorter = []
        for r in cands[1:]:
            if rows >= room:
                return batch
            if low < r.extent <= top:
                if rows + r.n <= room:
                    batch.append(r)
                    rows += r.n
            elif r.extent <= low:
                shorter.append(r)
        if not shorter or rows >= room or not overhead:
            return batch
        queued: dict[int, int] = {}
        own = [bisect_left(buckets, r.extent) for r in shorter]
        for b, r in zip(own, shorter):
            queued[b] = queued.get(b, 0) + r.n
        for r, b in sorted(zip(shorter, own), key=_longest_first):
            # per sample: the padding it would compute here vs its share of a run of its own bucket
            if 2 * (top - buckets[b]) >= overhead / min(queued[b], room):
                continue
            if rows + r.n <= room:
                batch.append(r)
                rows += r.n
                if rows >= room:
                    break
        return batch

    def stack(self, name: str, arrays: Sequence[np.ndarray], lengths: Sequence[int], bucket: int,
              batch_axis: int | None) -> np.ndarray:
        """Stack one padded input along its batch axis, every array padded to ``bucket`` along its pad axis."""
        axis, value = self.inputs[name]
        first = arrays[0]
        shape = list(first.shape)
        shape[axis] = bucket
        if batch_axis is not None:
            shape[batch_axis] = sum(a.shape[batch_axis] for a in arrays)
        out = np.full(shape, value, dtype=first.dtype)
        idx: list[Any] = [slice(None)] * first.ndim
        off = 0
        for arr, length in zip(arrays, lengths):
            idx[axis] = slice(0, length)
            if batch_axis is not None:
                n = arr.shape[batch_axis]
                idx[batch_axis] = slice(off, off + n)
                off += n
            out[tuple(idx)] = arr
        return out

    def crop(self, name: str, value: np.ndarray, length: int) -> np.ndarray:
        axis = self.outputs.get(name)
        if axis is None or axis >= value.ndim:
            return value
        idx: list[Any] = [slice(None)] * value.ndim
        idx[axis] = slice(0, length)
        return value[tuple(idx)]

    def bucket(self, length: int) -> int | None:
        b = bisect_left(self.buckets, length)
        return self.buckets[b] if b < len(self.buckets) else None


def _longest_first(item: tuple) -> int:
    return -item[0].extent


class PadCost:
    """The cost of a run as ``a + b * padded tokens`` (seconds), fitted online by exponentially weighted least
    squares over the batches already run (the worker's whole time for a batch: assembly, engine, delivery);
    ``overhead`` = a / b, the fixed cost of a run in padded tokens (what ``PadPlan.choose`` needs), None until
    ``warm`` batches of different sizes gave a fit with a > 0 and b > 0. ``overhead=`` pins it (tests)."""

    def __init__(self, overhead: float | None = None, *, decay: float = 0.99, warm: int = 8):
        self.pinned = overhead is not None
        self.overhead = overhead
        self.decay = decay
        self.warm = warm
        self.count = 0
        self.seconds_per_token: float | None = None
        self.tokens = self.real = 0
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self._lock = threading.Lock()

    def observe(self, tokens: int, real: int, seconds: float) -> None:
        """One batch: ``tokens`` padded tokens run (``real`` of them the requests' own) in ``seconds``."""
        d = self.decay
        x = float(tokens)
        with self._lock:
            self.tokens += tokens
            self.real += real
            if self.pinned:
                return
            self._w = self._w * d + 1.0
            self._x = self._x * d + x
            self._y = self._y * d + seconds
            self._xx = self._xx * d + x * x
            self._xy = self._xy * d + x * seconds
            self.count += 1
            if self.count < self.warm:
                return
            w = self._w
            mx, my = self._x / w, self._y / w
            var = self._xx / w - mx * mx
            if var <= (0.05 * mx) ** 2:  # batches all alike: no slope to measure, keep the last estimate
                return
            b = (self._xy / w - mx * my) / var
            a = my - b * mx
            if a > 0 and b > 0:  # else noise (a shared machine): keep the last estimate
                self.overhead = a / b
                self.seconds_per_token = b

    def fit(self) -> dict:
        """The current fit and what padding cost so far: overhead_tokens (a / b), us_per_token (b), batches seen,
        padded_per_real (padded tokens run per token of the requests' own)."""
        spt = self.seconds_per_token
        return {"overhead_tokens": self.overhead, "us_per_token": None if spt is None else spt * 1e6,
                "batches": self.count, "padded_per_real": self.tokens / self.real if self.real else None}


def plan_of(decl: Mapping[str, Any] | PadPlan | None, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
            *, batched: bool = True, where: str = "padding") -> PadPlan | None:
    """A PadPlan from a declaration (None when there is none, or the model does not batch)."""
    if decl is None or isinstance(decl, PadPlan):
        return decl
    if not batched:
        raise _err(where, "the model has no batch axis (max_batch_size 0): there is nothing to merge, so nothing "
                          "to pad; remove the declaration")
    return PadPlan(decl, inputs, outputs, batched=batched, where=where)
