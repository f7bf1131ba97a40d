"""The model's cost as a function of batch size, at the precision being planned.

Every per-op figure of an ONNX graph (FLOPs, bytes read / written, weights) is affine in the batch size
when the batch axis is a pure batch axis: ``cost(b) = cost(1) + (cost(2) - cost(1)) x (b - 1)``. So the graph
is analysed twice (``graph.analyze`` at batch 1 and 2) per shape choice, and any batch size is then
priced without touching the graph again: latency uses the OPT shapes of ``--shapes`` (the typical request),
memory uses the MAX shapes (the worst request the engine must hold).

Planning an FP32 graph at another precision re-prices each tensor at that precision's element size: for
FP16/BF16 everything is 2 bytes; for INT8/FP8 the conv/matmul inputs, weights and outputs are 1 byte and
the remaining ops run in FP16 (what TensorRT does with INT8 + FP16 enabled, and what an explicitly
quantized QDQ graph leaves unquantized).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import UserError
from ..graph import ModelCost, analyze, load_model
from ..graph import opcost as _opcost
from ..shapes import ShapeRange

# bytes per element of an activation / weight at each planned precision
ELEM = {"fp32": 4.0, "tf32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "fp8": 1.0}
# what the non-matrix ops run in at that precision
VECTOR_ELEM = {"fp32": 4.0, "tf32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 2.0, "fp8": 2.0}
_ORDER = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "int8": 1, "fp8": 1}


@dataclasses.dataclass(frozen=True)
class Kernels:
    """The graph as a fusing engine runs it (``xinfer_sdk.graph.kernels``), as arrays affine in the batch size."""

    kernel: np.ndarray  # int per op: the kernel it runs in (index of the kernel's first op), -1: runs nowhere
    attention: np.ndarray  # int per op: attention pattern (index of its QK^T MatMul), -1: none
    gemm: tuple[np.ndarray, np.ndarray]  # (ops x 5) M, N, K, count, taps at batch 0 and per sample (NaN: no GEMM)
    weight_bytes: np.ndarray  # per op, at the planned precision
    edge_producer: np.ndarray  # int per edge: producer kernel, -1 for a graph input
    edge_consumers: tuple[tuple[int, ...], ...]  # consumer kernels per edge, -1 for a graph output
    edge_elements: tuple[np.ndarray, np.ndarray]  # per edge, at batch 0 and per sample
    edge_itemsize: np.ndarray  # per edge, bytes per element as the graph stores it
    edge_names: tuple[str, ...] = ()

    def gemm_at(self, b: int) -> np.ndarray:
        return self.gemm[0] + self.gemm[1] * b

    def edges_at(self, b: int) -> np.ndarray:
        return self.edge_elements[0] + self.edge_elements[1] * b


def _kernels(one: ModelCost, two: ModelCost, graph: str, target: str, batched: bool) -> Kernels | None:
    if len(one.ops) != len(two.ops) or [e.name for e in one.edges] != [e.name for e in two.edges]:
        return None
    nan = [np.nan] * 5

    def gemm(cost):
        return np.array([list(o.gemm) if o.gemm else nan for o in cost.ops], dtype=float)

    g1, g2 = gemm(one), gemm(two)
    e1 = np.array([e.elements for e in one.edges], dtype=float)
    e2 = np.array([e.elements for e in two.edges], dtype=float)
    if not batched:
        g2, e2 = g1, e1
    wb = np.array([o.weight_bytes * _scales(o.op_class, graph, target)[1] for o in one.ops], dtype=float)
    return Kernels(kernel=np.array([o.kernel for o in one.ops], dtype=int),
                   attention=np.array([o.attention for o in one.ops], dtype=int),
                   gemm=(2 * g1 - g2, g2 - g1), weight_bytes=wb,
                   edge_producer=np.array([e.producer for e in one.edges], dtype=int),
                   edge_consumers=tuple(e.consumers for e in one.edges), edge_elements=(2 * e1 - e2, e2 - e1),
                   edge_itemsize=np.array([e.itemsize for e in one.edges], dtype=float),
                   edge_names=tuple(e.name for e in one.edges))


@dataclasses.dataclass(frozen=True)
class CostCurve:
    """Per-op cost arrays (intercept + slope in batch) at one planned precision."""

    name: str
    batched: bool
    graph_precision: str
    precision: str
    op_types: tuple[str, ...]
    op_classes: tuple[str, ...]
    fused: np.ndarray  # bool per op
    matrix: np.ndarray  # bool per op: runs on the matrix units
    flops: tuple[np.ndarray, np.ndarray]  # (at batch 0, per sample) per op
    bytes: tuple[np.ndarray, np.ndarray]
    param_bytes: float
    param_count: int
    activation: tuple[float, float]  # peak live activation bytes at the MAX shapes (intercept, slope)
    io: tuple[float, float]  # input + output bytes at the OPT shapes
    io_max: tuple[float, float]
    base: ModelCost  # batch 1, OPT shapes, as the graph stores it
    weight_bytes: float = 0.0  # parameters at the planned precision (matrix weights re-priced)
    notes: tuple[str, ...] = ()
    kernels: Kernels | None = None  # how a fusing engine (TensorRT) runs the graph; None: not available
    warnings: tuple[str, ...] = ()  # what the figures leave out (nodes shape inference could not size)

    def at(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(flops, bytes) per op at batch b."""
        b = b if self.batched else 1
        return self.flops[0] + self.flops[1] * b, self.bytes[0] + self.bytes[1] * b

    def total_flops(self, b: int) -> float:
        return float(self.at(b)[0].sum())

    def total_bytes(self, b: int) -> float:
        return float(self.at(b)[1].sum())

    def activation_bytes(self, b: int) -> float:
        b = b if self.batched else 1
        return self.activation[0] + self.activation[1] * b

    def io_bytes(self, b: int, *, which: str = "opt") -> float:
        a, k = self.io if which == "opt" else self.io_max
        return a + k * (b if self.batched else 1)

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "batched": self.batched, "graph_precision": self.graph_precision,
                "precision": self.precision, "flops_per_sample": self.total_flops(2) - self.total_flops(1),
                "flops_batch1": self.total_flops(1), "param_bytes": self.weight_bytes,
                "param_bytes_stored": self.param_bytes, "param_count": self.param_count,
                "activation_bytes_per_sample": self.activation[1], "activation_bytes_batch1": self.activation_bytes(1),
                "io_bytes_per_sample": self.io[1], "ops": len(self.op_types),
                "ops_by_class": _count(self.op_classes), "input_shapes": dict(self.base.input_shapes),
                "uncosted_nodes": list(self.base.unknown)}


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def _reprice_params(base: ModelCost, graph: str, target: str) -> float:
    """Parameters at the planned precision: conv/matmul weights at its element size, the float weights of other
    ops (embeddings, norms) at the size those ops run in (FP16 under INT8/FP8), integer constants as stored."""
    if graph == target or _ORDER.get(graph, 4) <= _ORDER.get(target, 4):
        return base.param_bytes
    old = ELEM.get(graph, 4.0)
    use = base.param_bytes_by_use or {"other": base.param_bytes}
    return (use.get("int", 0.0) + use.get("matrix", 0.0) * ELEM[target] / old
            + use.get("other", 0.0) * VECTOR_ELEM[target] / old)


def _scales(cls: str, graph: str, target: str) -> tuple[float, float, float]:
    """(read, weight, write) byte multipliers to re-price one op from the graph's precision to the target."""
    if graph == target or _ORDER.get(graph, 4) <= _ORDER.get(target, 4):
        return 1.0, 1.0, 1.0  # already at (or below) the target: the stored sizes are what runs
    old = ELEM.get(graph, 4.0)
    if cls in _opcost.MATRIX_CLASSES:
        s = ELEM[target] / old
        return s, s, s
    s = VECTOR_ELEM[target] / old
    return s, s, s


def _arrays(cost: ModelCost, graph: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    fl = np.array([o.flops for o in cost.ops], dtype=float)
    by = np.empty(len(cost.ops))
    for k, o in enumerate(cost.ops):
        r, w, wr = _scales(o.op_class, graph, target)
        by[k] = o.read_bytes * r + o.weight_bytes * w + o.write_bytes * wr
    return fl, by


def check_precision(graph: str, target: str) -> None:
    if _ORDER.get(target, 4) > _ORDER.get(graph, 4):
        raise UserError(f"the graph is already {graph.upper()}; it cannot be planned at {target}",
                        hint=f"use --precision {graph}, or plan the FP32 model")


def build_curve(model: Any, *, precision: str | None = None, shapes: Mapping[str, ShapeRange] | None = None,
                name: str | None = None) -> CostCurve:
    """Analyse ``model`` (path or ModelProto) at batch 1 and 2 and return its cost curve at ``precision``
    (None: the graph's own precision)."""
    proto = load_model(model)
    one = analyze(proto, batch_size=1, shapes=shapes, which="opt")
    graph = one.precision
    target = precision or graph
    check_precision(graph, target)
    if one.batched:
        two = analyze(proto, batch_size=2, shapes=shapes, which="opt")
        m1 = analyze(proto, batch_size=1, shapes=shapes, which="max")
        m2 = analyze(proto, batch_size=2, shapes=shapes, which="max")
    else:
        two = one
        m1 = m2 = analyze(proto, batch_size=1, shapes=shapes, which="max")
    if len(two.ops) != len(one.ops):  # a batch-dependent graph (should not happen): fall back to scaling
        two = one
    f1, b1 = _arrays(one, graph, target)
    f2, b2 = _arrays(two, graph, target)
    act_scale = ELEM[target] / ELEM.get(graph, 4.0) if _ORDER.get(graph, 4) > _ORDER.get(target, 4) else 1.0
    vec_scale = VECTOR_ELEM[target] / ELEM.get(graph, 4.0) if act_scale != 1.0 else 1.0
    a1, a2 = m1.activation_bytes * vec_scale, m2.activation_bytes * vec_scale
    slope_f, slope_b = f2 - f1, b2 - b1
    notes = tuple(one.notes)
    warnings = tuple(w for w in (one.uncosted_warning() or m1.uncosted_warning(),) if w)
    if graph != target:
        notes += (f"the graph is {graph.upper()}; bytes are re-priced at {target.upper()} as a {target.upper()} build "
                  "would store them",)
    return CostCurve(
        name=name or (str(model) if not hasattr(model, "graph") else (model.graph.name or "model")),
        batched=one.batched, graph_precision=graph, precision=target,
        op_types=tuple(o.op_type for o in one.ops), op_classes=tuple(o.op_class for o in one.ops),
        fused=np.array([o.fused for o in one.ops], dtype=bool),
        matrix=np.array([o.op_class in _opcost.MATRIX_CLASSES for o in one.ops], dtype=bool),
        flops=(f1 - slope_f, slope_f), bytes=(b1 - slope_b, slope_b), param_bytes=one.param_bytes,
        param_count=one.param_count, activation=(a1 - (a2 - a1), a2 - a1),
        io=(one.io_bytes - (two.io_bytes - one.io_bytes), two.io_bytes - one.io_bytes),
        io_max=(m1.io_bytes - (m2.io_bytes - m1.io_bytes), m2.io_bytes - m1.io_bytes), base=one,
        weight_bytes=_reprice_params(one, graph, target), notes=notes, warnings=warnings,
        kernels=_kernels(one, two, graph, target, one.batched))
