"""Which axis of each input and output is the batch: inferred from the IO spec alone (names, dtypes, dims).

Used by ``build`` (converters/graph.py, from the ONNX graph) and by loading a raw .onnx file (from ONNX Runtime's
metadata), so both agree:

* every tensor's dim 0 dynamic (the common export): axis 0 everywhere;
* otherwise the symbolic dim the inputs share that names the batch ('batch', 'batch_size', 'N', '*batch*'),
  wherever it sits (a recurrent state ``[2, batch, 128]``);
* no dim named at all, or only names a tool made up (``state_d1``, ``unk__52``) (silero-vad: input ``[?, ?]``, state ``[2, ?, 128]``, sr ``[]``): each input's first
  dynamic axis; an output takes the axis of the input it mirrors (same dtype and rank, fixed dims that agree,
  a name pair such as state/stateN, h/hn, x_in/x_out preferred), else its own first dynamic axis;
* a rank-0 or fully fixed tensor has none (``batch_axis`` None: a scalar sample rate, shared by a batch);
* named dims none of which is a batch, or an input that starts with a fixed 1: the model does not batch.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from ..bundle import TensorSpec

# symbolic dim names that mean "the batch" (compared lower-case; any name containing "batch" also counts)
BATCH_DIM_NAMES = ("batch", "batch_size", "batchsize", "bs", "n", "b", "num_batches")


def _generated(name: str | None, tensor: str) -> bool:
    """A dim name a tool made up for an unnamed dim (onnxslim 'state_d1', ONNX 'unk__52', '?'): no name."""
    return not name or name == "?" or name.startswith("unk__") or re.fullmatch(re.escape(tensor) + r"_d\d+", name) \
        is not None


def _names(spec: TensorSpec) -> tuple[str | None, ...]:
    return tuple(None if _generated(n, spec.name) else n for n in spec.dim_names) or (None,) * len(spec.shape)


def _batch_name(inputs: Sequence[TensorSpec]) -> str | None:
    seen: dict[str, int] = {}
    for s in inputs:
        for p in {p for p in _names(s) if p}:
            seen[p] = seen.get(p, 0) + 1
    names = [p for p in seen if p.lower() in BATCH_DIM_NAMES or "batch" in p.lower()]
    return max(names, key=lambda p: seen[p]) if names else None


def _first_dynamic(spec: TensorSpec) -> int | None:
    return next((i for i, d in enumerate(spec.shape) if d < 0), None)


def _mirror(out: TensorSpec, inputs: Sequence[TensorSpec], in_axes: dict[str, int | None]) -> int | None:
    def fits(s: TensorSpec) -> bool:
        return (s.dtype == out.dtype and len(s.shape) == len(out.shape) and in_axes.get(s.name) is not None
                and all(a < 0 or b < 0 or a == b for a, b in zip(s.shape, out.shape)))

    cands = [s for s in inputs if fits(s)]
    low = out.name.lower()
    stem = low.removesuffix("_out").removesuffix("n").removesuffix("_")
    named = [s for s in cands if s.name.lower().removesuffix("_in").removesuffix("_") in (stem, low)]
    pick = (named or cands)[:1]
    return in_axes[pick[0].name] if pick else _first_dynamic(out)


def infer_batch_axes(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
                     ) -> tuple[list[int | None], list[int | None]] | None:
    """Each input's and output's batch axis (in order), or None when the model does not batch."""
    if inputs and outputs and all(s.shape and s.shape[0] < 0 for s in [*inputs, *outputs]):
        return [0] * len(inputs), [0] * len(outputs)
    name = _batch_name(inputs)
    if name is not None:
        in_axes = {s.name: next((i for i, p in enumerate(_names(s)) if p == name), None) for s in inputs}
    elif any(p for s in inputs for p in _names(s)) or any(s.shape and s.shape[0] == 1 for s in inputs):
        return None
    else:
        in_axes = {s.name: _first_dynamic(s) for s in inputs}
    if all(a is None for a in in_axes.values()):
        return None
    out_axes = []
    for o in outputs:
        own = next((i for i, p in enumerate(_names(o)) if name is not None and p == name), None)
        out_axes.append(own if own is not None else _mirror(o, inputs, in_axes))
    if all(a is None for a in out_axes):
        return None
    return [in_axes[s.name] for s in inputs], out_axes


def _set_axis(spec: TensorSpec, axis: int | None) -> TensorSpec:
    if axis is None:
        return dataclasses.replace(spec, batch_axis=None)
    shape = list(spec.shape)
    names = list(_names(spec))
    shape[axis] = -1
    names[axis] = names[axis] or "batch"
    return dataclasses.replace(spec, shape=tuple(shape), dim_names=tuple(names), batch_axis=axis)


def with_batch_axes(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
                    ) -> tuple[list[TensorSpec], list[TensorSpec], bool]:
    """The specs with their batch axes set (the batch dim named 'batch' when unnamed), and whether the model
    batches (when it does not, the specs are returned unchanged)."""
    axes = infer_batch_axes(inputs, outputs)
    if axes is None:
        return list(inputs), list(outputs), False
    return ([_set_axis(s, a) for s, a in zip(inputs, axes[0])], [_set_axis(s, a) for s, a in zip(outputs, axes[1])],
            True)
