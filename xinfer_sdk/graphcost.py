"""What an ONNX graph costs at a given batch and shape: FLOPs, bytes moved, parameters, peak activations.

    cost = analyze("model.onnx", batch_size=8, shapes=parse_shapes("input_ids:1x8..32x128..64x512"), which="opt")
    cost.flops, cost.param_bytes, cost.activation_bytes, cost.ops[0].op_class

How: a working copy of the graph is made static (the symbolic batch axis becomes ``batch_size``, other
symbolic axes come from ``shapes``), ``onnx.shape_inference`` (with data propagation) sizes every tensor,
and one pass in topological order counts each node (``_opcost``) and walks tensor lifetimes for the peak
of live activation memory. Sizes are precision-aware: a weight counts at its stored type (an INT8 weight
behind a DequantizeLinear is 1 byte per element, FP16 is 2), and an activation that is re-quantized by the
next node is written at the quantized size. Element-wise ops that follow a convolution / matrix product
whose output only element-wise ops read are marked ``fused``: TensorRT and ONNX Runtime run them in the
producer's epilogue, so they move no extra memory (a residual input is still read). Transposes and splits
that only feed matrix ops are absorbed as operand layouts; an embedding Gather reads the rows it gathers.

Used by the planner (``xinfer_sdk.planning``) and by the build's memory budget.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from ._graphshapes import SHAPES_HINT, graph_inputs, is_batched, resolve_input_shapes, static_copy
from ._lazy import require
from .errors import ConversionError
from .shapes import ShapeRange

__all__ = ["analyze", "ModelCost", "OpCost", "load_model", "resolve_input_shapes", "graph_inputs", "is_batched",
           "SHAPES_HINT"]



@dataclasses.dataclass(frozen=True)
class OpCost:
    """One node at the analysed batch and shapes."""

    name: str
    op_type: str
    op_class: str  # conv | matmul | elementwise | normalization | pooling | reduction | data | view | shape | quant
    flops: float
    read_bytes: float  # activation inputs, at their stored precision
    weight_bytes: float  # constant inputs (weights, biases), at their stored precision
    write_bytes: float  # outputs, at the precision they are stored in
    precision: str  # what the node computes in: fp32 | fp16 | bf16 | int8 | fp8
    in_elements: int = 0  # activation input elements (to re-price the op at another precision)
    weight_elements: int = 0
    out_elements: int = 0
    fused: bool = False  # runs in the epilogue of the conv/matmul before it (or is a Q/DQ / view)
    known: bool = True  # False when shape inference could not size a tensor this node touches

    @property
    def bytes(self) -> float:
        return self.read_bytes + self.weight_bytes + self.write_bytes

    @property
    def intensity(self) -> float:
        """Arithmetic intensity (FLOPs per byte moved)."""
        return self.flops / self.bytes if self.bytes else float("inf")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["bytes"] = self.bytes
        return d


@dataclasses.dataclass(frozen=True)
class ModelCost:
    """A whole graph at one batch size and one set of input shapes."""

    batch_size: int
    batched: bool  # the model has a symbolic batch axis 0 (it can be batched)
    input_shapes: Mapping[str, tuple[int, ...]]
    output_shapes: Mapping[str, tuple[int, ...]]
    flops: float
    param_bytes: float
    param_count: int
    activation_bytes: float  # peak of live activation memory (inputs and outputs included) in a topological walk
    io_bytes: float  # inputs + outputs at this batch
    input_bytes: float
    output_bytes: float
    precision: str  # dominant compute precision of the matrix ops (fp32 | fp16 | bf16 | int8 | fp8)
    ops: tuple[OpCost, ...]
    unknown: tuple[str, ...] = ()  # nodes that could not be sized (their cost is missing from the totals)
    # param_bytes split by what reads the weight: conv/matmul ("matrix"), other float ops ("other": embeddings,
    # norms), integer constants ("int": shapes, indices) -- so a planner can re-price each at another precision
    param_bytes_by_use: Mapping[str, float] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def bytes(self) -> float:
        return sum(o.bytes for o in self.ops if not o.fused)

    def by_class(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for o in self.ops:
            c = out.setdefault(o.op_class, {"count": 0, "flops": 0.0, "bytes": 0.0})
            c["count"] += 1
            c["flops"] += o.flops
            c["bytes"] += 0.0 if o.fused else o.bytes
        return out

    def to_dict(self, *, ops: bool = False) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "ops"}
        d["input_shapes"] = {k: list(v) for k, v in self.input_shapes.items()}
        d["output_shapes"] = {k: list(v) for k, v in self.output_shapes.items()}
        d["unknown"], d["notes"] = list(self.unknown), list(self.notes)
        d["bytes"] = self.bytes
        d["by_class"] = self.by_class()
        if ops:
            d["ops"] = [o.to_dict() for o in self.ops]
        return d


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
    inferred = static_copy(proto, input_shapes)
    from ._graphwalk import Walk

    return Walk(proto, inferred, input_shapes, batched).run()
