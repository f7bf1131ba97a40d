"""ONNX file helpers shared by the steps: read and write (external data past 2 GB), the IO spec, dims.

Every onnx / protobuf error is turned into a ``ConversionError`` naming the file, at this boundary.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xinfer_sdk._lazy import require
from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.errors import ConversionError

log = logging.getLogger(__name__)

# protobuf cannot serialize more than 2 GiB; keep a margin for the graph itself.
EXTERNAL_DATA_BYTES = 1_800_000_000
# The opset of every export: the newest that all TensorRT versions named by a profile parse.
EXPORT_OPSET = 17
# Highest ONNX opset each TensorRT major's parser accepts (support matrices / ONNX opset guide).
TRT_MAX_OPSET = {8: 17, 10: 20, 11: 25}


def onnx():
    return require("onnx", purpose="reading and writing ONNX graphs")


def load(path: str | os.PathLike[str], *, what: str = "model") -> Any:
    """Read an ONNX file (with its external data) or raise ConversionError that names it."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{what} {str(path)!r} does not exist")
    mod = onnx()
    try:
        model = mod.load(str(path))
    except Exception as exc:  # google.protobuf DecodeError, OSError for missing external data, ...
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {first})",
                              hint="re-export the model, or check that the file was copied completely") from None
    if not model.graph.node:
        raise ConversionError(f"{path}: the ONNX graph has no nodes (an empty or truncated file?)")
    return model


def save(model: Any, path: str | os.PathLike[str]) -> list[Path]:
    """Write ``model``; graphs past protobuf's 2 GB limit keep their weights in ``<name>.data`` beside it.
    Returns the files written (the .onnx first)."""
    mod = onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    big = model.ByteSize() > EXTERNAL_DATA_BYTES if _fits_bytesize(model) else True
    if big:
        mod.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                       location=data.name, size_threshold=1024)
        return [path, data]
    mod.save_model(model, str(path))
    return [path]


def _fits_bytesize(model) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:  # ByteSize itself overflows past 2 GB on some protobuf builds
        return False


def files_of(path: str | os.PathLike[str]) -> list[Path]:
    """The .onnx and, when present, its external-data file."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    return [path, data] if data.exists() else [path]


def graph_inputs(model) -> list:
    """Real inputs (old exporters also list initializers as graph inputs)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def np_dtype(elem_type: int) -> str:
    """ONNX element type -> numpy dtype name ('float32', 'int64', ...)."""
    import numpy as np

    return np.dtype(onnx().helper.tensor_dtype_to_np_dtype(elem_type)).name


def spec_of(value_info, *, batched: bool, axis: int | None = 0) -> TensorSpec:
    """The TensorSpec of a graph input/output; ``axis``: its batch axis when the model batches (None: none)."""
    t = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type"):
        raise ConversionError(f"graph value {value_info.name!r} is not a tensor (sequences and maps are not "
                              "supported as model inputs or outputs)")
    axis = axis if batched else None
    shape, names = [], []
    for i, d in enumerate(t.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0 and i != axis:
            shape.append(int(d.dim_value))
            names.append(None)
        else:
            shape.append(-1)
            names.append(d.dim_param or ("batch" if i == axis else None))
    return TensorSpec(name=value_info.name, dtype=np_dtype(t.elem_type), shape=tuple(shape), dim_names=tuple(names),
                      batch_axis=axis if batched else 0)


def is_batched(model) -> bool:
    """Every input (and output) has a symbolic axis 0: the runtime may batch requests along it."""
    values = [*graph_inputs(model), *model.graph.output]
    if not values:
        return False
    for v in values:
        dims = v.type.tensor_type.shape.dim
        if not dims or (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            return False
    return True


# symbolic dim names that mean "the batch" (case-insensitive)
BATCH_DIM_NAMES = ("batch", "batch_size", "batchsize", "bs", "n", "b", "num_batches")


def _dims(v) -> list:
    return list(v.type.tensor_type.shape.dim)


def _dynamic(d) -> bool:
    return not (d.HasField("dim_value") and d.dim_value > 0)


def _batch_name(values) -> str | None:
    """The symbolic dim the inputs share that names the batch ('batch', 'batch_size', 'N', '*batch*')."""
    seen: dict[str, int] = {}
    for v in values:
        for p in {d.dim_param for d in _dims(v) if d.dim_param}:
            seen[p] = seen.get(p, 0) + 1
    names = [p for p in seen if p.lower() in BATCH_DIM_NAMES or "batch" in p.lower()]
    return max(names, key=lambda p: seen[p]) if names else None


def _axis_by_pairing(out, ins, in_axes: dict[str, int | None]) -> int | None:
    """An output without a named batch dim takes the batch axis of the input it mirrors: same dtype and rank, fixed
    dims that agree, preferring a name pair (state/stateN, h/hn, x_in/x_out); else its first dynamic axis."""
    od = _dims(out)
    et = out.type.tensor_type.elem_type

    def fits(v) -> bool:
        vd = _dims(v)
        return (v.type.tensor_type.elem_type == et and len(vd) == len(od) and in_axes.get(v.name) is not None
                and all(_dynamic(a) or _dynamic(b) or a.dim_value == b.dim_value for a, b in zip(vd, od)))

    cands = [v for v in ins if fits(v)]
    stem = out.name.lower().removesuffix("_out").removesuffix("n").removesuffix("_")
    named = [v for v in cands if v.name.lower().removesuffix("_in").removesuffix("_") in (stem, out.name.lower())]
    pick = (named or cands)[:1]
    if pick:
        return in_axes[pick[0].name]
    return next((i for i, d in enumerate(od) if _dynamic(d)), None)


def batch_axes(model) -> tuple[dict[str, int | None], dict[str, int | None]] | None:
    """Each input's and output's batch axis, or None when the model does not batch.

    Axis 0 everywhere when every tensor's dim 0 is dynamic (the common export). Otherwise the symbolic dim the
    inputs share that names the batch ('batch', 'N', ...) wherever it sits; failing names (silero-vad's dims are
    all unnamed: input [?, ?], state [2, ?, 128], sr []), each input's first dynamic axis. A rank-0 or fully fixed
    input has none (a scalar sample rate). A model whose inputs start with a fixed 1 is not batched."""
    ins, outs = graph_inputs(model), list(model.graph.output)
    if is_batched(model):
        return {v.name: 0 for v in ins}, {v.name: 0 for v in outs}
    name = _batch_name(ins)
    in_axes: dict[str, int | None] = {}
    if name is not None:
        for v in ins:
            in_axes[v.name] = next((i for i, d in enumerate(_dims(v)) if d.dim_param == name), None)
    elif any(d.dim_param for v in ins for d in _dims(v)) or any(
            _dims(v) and _dims(v)[0].HasField("dim_value") and _dims(v)[0].dim_value == 1 for v in ins):
        return None  # named dims but none is the batch, or a fixed batch of 1
    else:
        for v in ins:
            in_axes[v.name] = next((i for i, d in enumerate(_dims(v)) if _dynamic(d)), None)
    if all(a is None for a in in_axes.values()):
        return None
    out_axes: dict[str, int | None] = {}
    for o in outs:
        own = next((i for i, d in enumerate(_dims(o)) if name is not None and d.dim_param == name), None)
        out_axes[o.name] = own if own is not None else _axis_by_pairing(o, ins, in_axes)
    if all(a is None for a in out_axes.values()):
        return None
    return in_axes, out_axes


def io_specs(model) -> tuple[list[TensorSpec], list[TensorSpec], bool]:
    """The model's input and output specs (each with its batch axis) and whether it batches."""
    axes = batch_axes(model)
    batched = axes is not None
    in_axes, out_axes = axes if axes is not None else ({}, {})
    ins = [spec_of(v, batched=batched, axis=in_axes.get(v.name)) for v in graph_inputs(model)]
    outs = [spec_of(v, batched=batched, axis=out_axes.get(v.name)) for v in model.graph.output]
    return ins, outs, batched


def opset(model) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 0


def rename_dims(model, mapping: Mapping[str, str]) -> int:
    """Rename symbolic dims (dim_param) everywhere in the graph's IO and value_info; returns how many changed."""
    changed = 0
    values = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    for v in values:
        for d in v.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in mapping:
                d.dim_param = mapping[d.dim_param]
                changed += 1
    return changed


def set_dim(value_info, axis: int, name: str) -> None:
    dims = value_info.type.tensor_type.shape.dim
    if axis < len(dims):
        dims[axis].dim_param = name
