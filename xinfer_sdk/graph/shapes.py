"""Making an ONNX graph static for costing: concrete input shapes from the batch size and ``--shapes``, and a
shape-inferred copy of the graph (big initializers replaced by typed inputs, so inference is fast and stays
under protobuf's 2 GB limit)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from .._lazy import require
from ..errors import ConversionError, UserError
from ..shapes import ShapeRange, check_names
from .fold import fold_and_infer

log = logging.getLogger(__name__)

SHAPES_HINT = "--shapes NAME:MIN..OPT..MAX"  # an error names the input and its dims (shapes_example)
# Initializers larger than this many elements are moved out of the copy given to shape inference (they only
# need their type and shape there); keeps inference fast and under protobuf's 2 GB limit.
_INLINE_MAX = 4096

def graph_inputs(model) -> list:
    """The real inputs (old exporters also list initializers as inputs)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def is_batched(model) -> bool:
    """True when every ranked input has a symbolic (or unset) axis 0: the model takes a batch axis."""
    ins = [i for i in graph_inputs(model) if i.type.tensor_type.shape.dim]
    return bool(ins) and all(not i.type.tensor_type.shape.dim[0].HasField("dim_value") for i in ins)


def resolve_input_shapes(model, *, batch_size: int | None, shapes: Mapping[str, ShapeRange] | None,
                         which: str) -> tuple[dict[str, tuple[int, ...]], bool]:
    """Concrete shape per input; raises UserError naming the input and the --shapes syntax when it cannot."""
    if which not in ("min", "opt", "max"):
        raise UserError(f"which={which!r}: expected 'min', 'opt' or 'max'")
    shapes = dict(shapes or {})
    ins = graph_inputs(model)
    check_names(shapes, [i.name for i in ins])
    batched = is_batched(model)
    params: dict[str, int] = {}
    for i in ins:  # symbolic names shared between inputs (e.g. "seq") take the value given for any of them
        dims = i.type.tensor_type.shape.dim
        if i.name in shapes:
            given = getattr(shapes[i.name], which)
            if len(given) != len(dims):
                raise UserError(f"--shapes {i.name}: the model's input has rank {len(dims)} "
                                f"({_dims_text(dims)}) but {'x'.join(map(str, given))} has rank {len(given)}")
            for axis, (d, g) in enumerate(zip(dims, given)):
                if d.HasField("dim_param") and d.dim_param and not (batched and axis == 0):
                    params.setdefault(d.dim_param, g)
    out: dict[str, tuple[int, ...]] = {}
    for i in ins:
        dims = i.type.tensor_type.shape.dim
        given = getattr(shapes[i.name], which) if i.name in shapes else None
        concrete = []
        for axis, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                if given is not None and given[axis] != d.dim_value and not (batched and axis == 0):
                    raise UserError(f"--shapes {i.name}: axis {axis} is fixed to {d.dim_value} in the model, "
                                    f"not {given[axis]}")
                concrete.append(int(d.dim_value))
            elif batched and axis == 0:
                b = batch_size if batch_size is not None else (given[0] if given is not None else 1)
                if b < 1:
                    raise UserError(f"batch_size must be >= 1, got {b}")
                concrete.append(int(b))
            elif given is not None:
                concrete.append(int(given[axis]))
            elif d.HasField("dim_param") and d.dim_param in params:
                concrete.append(params[d.dim_param])
            else:
                label = f"'{d.dim_param}'" if d.HasField("dim_param") and d.dim_param else "unnamed"
                raise UserError(f"input {i.name!r} has a dynamic axis {axis} ({label}, shape {_dims_text(dims)}) "
                                f"that cannot be sized; give its shape with --shapes {shapes_example(i.name, dims, batched)} "
                                f"(NAME:MIN..OPT..MAX; sizes of your own for {_dynamic_text(dims, batched)})")
        out[i.name] = tuple(concrete)
    return out, batched


# Example sizes of a dynamic (non-batch) axis in a --shapes hint: min, typical, max.
_EXAMPLE_SIZES = (16, 128, 512)


def shapes_example(name: str, dims, batched: bool) -> str:
    """A ``--shapes`` example for one input, in the model's own terms: its name, its fixed dims as they are, batch
    axis 1 (the planner and the build size the batch themselves), each other dynamic axis at 16 / 128 / 512."""
    parts = []
    for k in range(3):
        shape = []
        for axis, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(int(d.dim_value))
            elif batched and axis == 0:
                shape.append(1)
            else:
                shape.append(_EXAMPLE_SIZES[k])
        parts.append("x".join(map(str, shape)))
    return f"{name}:{'..'.join(parts)}"


def _dynamic_text(dims, batched: bool) -> str:
    axes = [f"axis {a}" + (f" '{d.dim_param}'" if d.HasField("dim_param") and d.dim_param else "")
            for a, d in enumerate(dims) if not (d.HasField("dim_value") and d.dim_value > 0) and not (batched and a == 0)]
    return ", ".join(axes)


def _dims_text(dims) -> str:
    return "x".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def static_copy(model, input_shapes: Mapping[str, tuple[int, ...]]):
    """(A shape-inferred copy with every graph input fixed, names of the tensors folded to values on the way).
    Big initializers become typed inputs; shape arithmetic inference cannot follow is evaluated (``fold``)."""
    onnx = require("onnx", purpose="reading ONNX graphs")
    m = onnx.ModelProto()
    if _has_big_inits(model):
        _copy_light(model, m)
    else:
        m.CopyFrom(model)
    for i in m.graph.input:
        if i.name in input_shapes:
            shape = i.type.tensor_type.shape
            for d, v in zip(shape.dim, input_shapes[i.name]):
                d.Clear()
                d.dim_value = v
    for o in m.graph.output:  # symbolic output dims would otherwise pin inference to stale names
        for d in o.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.Clear()
    del m.graph.value_info[:]
    return fold_and_infer(m, _infer)


def _infer(m):
    onnx = require("onnx", purpose="reading ONNX graphs")
    try:
        return onnx.shape_inference.infer_shapes(m, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:
        log.warning("graphcost                          | onnx shape inference failed (%s); trying without data "
                    "propagation", exc)
        try:
            return onnx.shape_inference.infer_shapes(m, check_type=False, strict_mode=False)
        except Exception as exc2:
            raise ConversionError(f"ONNX shape inference failed on this graph: {exc2}") from exc2


def _has_big_inits(model) -> bool:
    return any(init_numel(t) > _INLINE_MAX for t in model.graph.initializer)


def _copy_light(model, m) -> None:
    onnx = require("onnx")
    m.CopyFrom(model)
    keep = []
    existing = {i.name for i in m.graph.input}
    for t in m.graph.initializer:
        if init_numel(t) > _INLINE_MAX:
            if t.name not in existing:
                m.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            keep.append(t)
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)


def init_numel(t) -> int:
    n = 1
    for d in t.dims:
        n *= d
    return n
