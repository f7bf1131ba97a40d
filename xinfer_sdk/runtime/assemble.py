"""How a batch is put together and taken apart: each tensor along its own batch axis, padded where declared.

``Layout`` knows, per input and output, the batch axis (``TensorSpec.batch_axis``: 0, another axis, or None for
an unbatched tensor that requests of one batch share) and the model's ``PadPlan`` (runtime/padding.py). The
common case, every axis 0 and no padding, keeps the plain ``np.concatenate`` / slicing path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..bundle import TensorSpec
from .padding import PadPlan, plan_of


def _take(arr: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    if axis == 0:
        return arr[start:stop]
    idx: list[Any] = [slice(None)] * arr.ndim
    idx[axis] = slice(start, stop)
    return arr[tuple(idx)]


class Layout:
    """Stacking and splitting for one model. ``inputs``/``outputs``: specs, or bare names (axis 0)."""

    def __init__(self, inputs: Sequence[TensorSpec | str], outputs: Sequence[TensorSpec | str] = (), *,
                 pad: PadPlan | None = None, batched: bool = True):
        def axes(items: Sequence[TensorSpec | str]) -> dict[str, int | None]:
            return {i: 0 for i in items} if all(isinstance(i, str) for i in items) else \
                {(i if isinstance(i, str) else i.name): (0 if isinstance(i, str) else i.batch_axis if i.shape else None)
                 for i in items}

        self.names = [i if isinstance(i, str) else i.name for i in inputs]
        self.in_axes = axes(inputs)
        self.out_axes = axes(outputs)
        self.pad = pad
        self.batched = batched
        self.simple = pad is None and all(a == 0 for a in self.in_axes.values()) and \
            all(a == 0 for a in self.out_axes.values())

    # -- one batch --------------------------------------------------------------------------------------
    def stack(self, reqs: Sequence[Any]) -> tuple[dict[str, np.ndarray], bool]:
        """The feeds of a batch of requests (``.feeds``, ``.extent``); True when they were padded."""
        if len(reqs) == 1:  # alone: run as sent (a lone request is never padded: no cost, nothing to crop)
            return reqs[0].feeds, False
        if self.simple:
            return {name: np.concatenate([r.feeds[name] for r in reqs]) for name in self.names}, False
        pad = self.pad
        lengths = None
        if pad is not None and reqs[0].extent is not None:
            lengths = [r.extent for r in reqs]
            bucket = pad.bucket(max(lengths))
        feeds = {}
        for name in self.names:
            axis = self.in_axes.get(name, 0)
            if lengths is not None and name in pad.inputs:
                feeds[name] = pad.stack(name, [r.feeds[name] for r in reqs], lengths, bucket, axis)
            elif axis is None:  # equal in every request of the batch (part of the signature)
                feeds[name] = reqs[0].feeds[name]
            else:
                feeds[name] = np.concatenate([r.feeds[name] for r in reqs], axis=axis)
        return feeds, lengths is not None

    def split(self, outputs: Mapping[str, np.ndarray], reqs: Sequence[Any], padded: bool) -> list[dict]:
        """Each request's share of the batch's outputs (cropped back to its own length when padded)."""
        if len(reqs) == 1:
            return [outputs]
        items = list(outputs.items())
        results = []
        total = 0
        if self.simple:
            for r in reqs:
                stop = total + r.n
                results.append({k: v[total:stop] for k, v in items})
                total = stop
            return results
        out_axes = self.out_axes
        pad = self.pad if padded else None
        for r in reqs:
            stop = total + r.n
            res = {}
            for k, v in items:
                axis = out_axes.get(k, 0)
                part = v if axis is None else _take(v, axis, total, stop)
                if pad is not None:
                    part = pad.crop(k, part, r.extent)
                res[k] = part
            results.append(res)
            total = stop
        return results

    def padded_tokens(self, feeds: Mapping[str, np.ndarray]) -> int:
        """Samples x padded length of a batch (its first padded input's batch and pad axes): what the run cost."""
        name, (axis, _) = next(iter(self.pad.inputs.items()))
        shape = feeds[name].shape
        batch_axis = self.in_axes.get(name, 0)
        return shape[axis] * (shape[batch_axis] if batch_axis is not None else 1)

    # -- a request above max_batch_size ---------------------------------------------------------------------
    def chunk(self, feeds: Mapping[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
        """Samples start..stop of a request (unbatched inputs whole)."""
        in_axes = self.in_axes
        return {k: v if in_axes.get(k, 0) is None else _take(v, in_axes.get(k, 0), start, stop)
                for k, v in feeds.items()}

    def merge(self, parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The chunks' outputs put back together, in order."""
        out_axes = self.out_axes
        merged = {}
        for k in parts[0]:
            axis = out_axes.get(k, 0)
            merged[k] = parts[0][k] if axis is None else np.concatenate([p[k] for p in parts], axis=axis)
        return merged


def layout_for(backend: Any, names: Sequence[str], batched: bool, model: str, inputs: Sequence[TensorSpec] | None,
               outputs: Sequence[TensorSpec] | None, padding: Any) -> Layout:
    """The Batcher's layout: from the specs and declaration given, else from the manifest of the bundle ``backend``
    runs (when its inputs are ``names``), else every tensor on axis 0 and no padding."""
    if inputs is None:
        manifest = getattr(getattr(backend, "bundle", None), "manifest", None)
        if manifest is not None and [s.name for s in manifest.inputs] == list(names):
            inputs, outputs = manifest.inputs, manifest.outputs
            if padding is None:
                padding = getattr(manifest, "padding", None)
    if inputs is None:
        return Layout(list(names), batched=batched)
    pad = plan_of(padding, inputs, outputs or (), batched=batched, where=f"model '{model}': padding")
    return Layout(inputs, outputs or (), pad=pad, batched=batched)
