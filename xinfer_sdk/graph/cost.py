"""What an ONNX graph costs at a given batch and shape: FLOPs, bytes moved, parameters, peak activations.

    cost = analyze("model.onnx", batch_size=8, shapes=parse_shapes("input_ids:1x8..32x128..64x512"), which="opt")
    cost.flops, cost.param_bytes, cost.activation_bytes, cost.ops[0].op_class

How: a working copy of the graph is made static (the symbolic batch axis becomes ``batch_size``, other
symbolic axes come from ``shapes``), ``onnx.shape_inference`` (with data propagation) sizes every tensor,
and one pass in topological order counts each node (``opcost``) and walks tensor lifetimes for the peak
of live activation memory. Sizes are precision-aware: a weight counts at its stored type (an INT8 weight
behind a DequantizeLinear is 1 byte per element, FP16 is 2), and an activation that is re-quantized by the
next node is written at the quantized size. Element-wise ops that follow a convolution / matrix product
whose output only element-wise ops read are marked ``fused``: TensorRT and ONNX Runtime run them in the
producer's epilogue, so they move no extra memory (a residual input is still read). Transposes and splits
that only feed matrix ops are absorbed as operand layouts; an embedding Gather reads the rows it gathers.

Used by the planner (``xinfer_sdk.planning``) and by the build's memory budget.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .._lazy import require
from ..errors import ConversionError
from ..shapes import ShapeRange
from .result import ModelCost, OpCost
from .shapes import SHAPES_HINT, graph_inputs, is_batched, resolve_input_shapes, static_copy
from .walk import Walk

__all__ = ["analyze", "ModelCost", "OpCost", "load_model", "resolve_input_shapes", "graph_inputs", "is_batched",
           "SHAPES_HINT"]


# ----------------------------------------------------------------------------------------------------------
def load_model(model: Any):
    """An onnx.ModelProto from a path (external weights are not read: only their shapes matter) or a proto."""
    onnx = require("onnx", purpose="reading ONNX graphs")
    if isinstance(model, onnx.ModelProto):
        return model
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise ConversionError(f"no ONNX file at {path!r}")
    try:
        return onnx.load(path, load_external_data=False)
    except Exception as exc:  # DecodeError, OSError: not an ONNX file
        raise ConversionError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc


def analyze(model: Any, *, batch_size: int | None = 1, shapes: Mapping[str, ShapeRange] | None = None,
            which: str = "max") -> ModelCost:
    """Cost of ``model`` (an ONNX path or ModelProto) at ``batch_size`` with shapes[which] for other axes."""
    proto = load_model(model)
    input_shapes, batched = resolve_input_shapes(proto, batch_size=batch_size, shapes=shapes, which=which)
    inferred, folded = static_copy(proto, input_shapes)
    return Walk(proto, inferred, input_shapes, batched, folded=folded).run()
