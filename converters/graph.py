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
from xinfer_sdk.runtime.axes import with_batch_axes

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


def io_specs(model) -> tuple[list[TensorSpec], list[TensorSpec], bool]:
    """The model's input and output specs, each with its batch axis (xinfer_sdk/runtime/axes.py says how it is
    inferred: the shared 'batch' dim wherever it sits, else for unnamed dims the first dynamic one; a scalar or
    fully fixed tensor has none), and whether the model batches."""
    ins = [spec_of(v, batched=False) for v in graph_inputs(model)]
    outs = [spec_of(v, batched=False) for v in model.graph.output]
    return with_batch_axes(ins, outs)


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
