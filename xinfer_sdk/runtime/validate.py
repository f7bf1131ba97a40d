"""Check a request's inputs against the bundle's IO spec before it enters the queue.

Names, dtypes and shapes are checked; ``InvalidInput`` says which input and what was expected. Python lists
are converted to the declared dtype; numpy arrays must already have it (as Triton requires), so no silent
float64 -> float32 narrowing happens.

The batch size is read along each input's own batch axis (``TensorSpec.batch_axis``). The shape signature (what
must be equal for two requests to share a batch) holds each input's shape without its batch axis, and, for an
input without one (a scalar sample rate), its shape and value: such inputs merge only when equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..bundle import TensorSpec
from ..errors import BundleError, InvalidInput


class InputValidator:
    """Precomputed checks for one model; ``__call__`` returns (feeds, batch size, shape signature)."""

    def __init__(self, specs: Sequence[TensorSpec], *, batched: bool):
        self.specs = list(specs)
        self.names = [s.name for s in self.specs]
        self.batched = batched
        self._checks = [(s.name, np.dtype(s.dtype) if s.dtype != "bytes" else np.dtype(object), s.shape,
                         s.batch_axis if batched and s.shape else None) for s in self.specs]  # a scalar: none
        self._expect = ", ".join(f"{s.name} {s.dtype}{list(s.shape)}" for s in self.specs)
        if batched and all(c[3] is None for c in self._checks):
            raise BundleError("a batching model needs at least one input with a batch axis; every input has "
                               "batch_axis None", hint="declare the model unbatched (max_batch_size 0)")
        # fast path: batch on axis 0 and every other dim fixed -> one tuple comparison per input
        self._fast = None
        if batched and all(len(s.shape) >= 1 and s.batch_axis == 0 and all(d >= 0 for d in s.shape[1:])
                           for s in self.specs):
            self._fast = [(name, dtype, tuple(shape[1:])) for name, dtype, shape, _ in self._checks]

    def __call__(self, inputs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], int, tuple]:
        fast = self._fast
        if fast is not None and type(inputs) is dict and len(inputs) == len(fast):
            feeds = {}
            sig = []
            batch = -1
            for name, dtype, tail in fast:
                arr = inputs.get(name)
                if type(arr) is not np.ndarray or arr.dtype != dtype:
                    break
                shape = arr.shape
                if shape[1:] != tail or not shape or shape[0] < 1 or (batch >= 0 and shape[0] != batch):
                    break
                batch = shape[0]
                feeds[name] = arr
                sig.append(tail)
            else:
                return feeds, batch, tuple(sig)
        return self._check(inputs)

    def _check(self, inputs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], int, tuple]:
        if not isinstance(inputs, Mapping):
            raise InvalidInput(f"inputs must be a dict of name -> array, got {type(inputs).__name__}; "
                               f"expected {self._expect}")
        if len(inputs) != len(self._checks) or any(n not in inputs for n in self.names):
            missing = [n for n in self.names if n not in inputs]
            unknown = [n for n in inputs if n not in self.names]
            parts = []
            if missing:
                parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
            if unknown:
                parts.append(f"unknown input(s) {', '.join(map(repr, map(str, unknown)))}")
            raise InvalidInput("; ".join(parts) + f"; the model takes {self._expect}")
        feeds: dict[str, np.ndarray] = {}
        batch = -1
        sig = []
        for name, dtype, shape, axis0 in self._checks:
            arr = inputs[name]
            if not isinstance(arr, np.ndarray):
                try:
                    arr = np.asarray(arr, dtype=dtype)
                except (TypeError, ValueError) as exc:
                    raise InvalidInput(f"input {name!r}: cannot convert to {dtype} ({exc})") from None
            elif arr.dtype != dtype:
                raise InvalidInput(f"input {name!r}: expected dtype {dtype}, got {arr.dtype}",
                                   hint=f"convert it, e.g. x.astype(np.{dtype})")
            if arr.ndim != len(shape):
                raise InvalidInput(f"input {name!r}: expected {len(shape)} dimensions {list(shape)}, got shape "
                                   f"{list(arr.shape)}")
            for axis, (want, got) in enumerate(zip(shape, arr.shape)):
                if want >= 0 and want != got:
                    raise InvalidInput(f"input {name!r}: dimension {axis} must be {want} (shape {list(shape)}), "
                                       f"got shape {list(arr.shape)}")
                if got == 0:
                    raise InvalidInput(f"input {name!r}: dimension {axis} is 0 (empty tensor), shape "
                                       f"{list(arr.shape)}")
            if axis0 is not None:
                n = arr.shape[axis0]
                if batch < 0:
                    batch = n
                elif n != batch:
                    raise InvalidInput(f"input {name!r}: batch size {n} differs from the other inputs' {batch} "
                                       f"({self._axes_text()})")
                sig.append(arr.shape[:axis0] + arr.shape[axis0 + 1:])
            elif self.batched:  # shared by the whole batch: merged only with requests that send the same value
                sig.append((arr.shape, arr.dtype.str, arr.tobytes() if arr.dtype != object else tuple(arr.flat)))
            else:
                sig.append(arr.shape)
            feeds[name] = arr
        return feeds, (batch if self.batched else 1), tuple(sig)

    def _axes_text(self) -> str:
        axes = [f"{name} on dimension {a}" for name, _, _, a in self._checks if a is not None]
        return "the batch axis is " + ", ".join(axes)


def check_finite(feeds: Mapping[str, np.ndarray]) -> None:
    """Refuse NaN/Inf in floating inputs (the server does this; embedded callers may opt in)."""
    for name, arr in feeds.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InvalidInput(f"input {name!r} contains NaN or Inf values")
