"""What the graph analysis returns: the cost of one node (``OpCost``) and of a whole graph (``ModelCost``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


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
    # How an engine that fuses like TensorRT runs it (``kernels``): the kernel this op belongs to (the index of
    # the kernel's first op; -1 for ops that run nowhere: views, shape arithmetic, Q/DQ, absorbed layouts), the
    # attention pattern it is part of (index of the QK^T MatMul; -1 if none), and the matrix product it runs.
    kernel: int = -1
    attention: int = -1
    gemm: tuple[int, ...] | None = None  # (M, N, K, count, taps) for conv / matmul (``opcost.gemm_shape``)

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
class Edge:
    """An activation tensor that crosses a kernel boundary: written once by its producer kernel (-1: a graph
    input) and read once by each consumer kernel (-1 among them: it is a graph output)."""

    name: str
    elements: int
    producer: int
    consumers: tuple[int, ...]
    itemsize: float = 4.0  # bytes per element as the graph stores it


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
    edges: tuple[Edge, ...] = ()  # tensors between the kernels of a TensorRT-like fusion (``OpCost.kernel``)

    @property
    def bytes(self) -> float:
        return sum(o.bytes for o in self.ops if not o.fused)

    def uncosted_warning(self) -> str | None:
        """One line naming every node left out of the totals (``unknown``), with their share; None when all count."""
        if not self.unknown:
            return None
        total, k = len(self.ops), len(self.unknown)
        matrix = [o for o in self.ops if o.op_class in ("conv", "matmul")]
        lost = sum(1 for o in matrix if not o.known)
        flops = (f"{lost} of {len(matrix)} matrix op(s) among them, so the {self.flops / 1e6:.4g} MFLOP counted "
                 "is a lower bound" if lost else "no matrix op among them, so the FLOP count misses little")
        return (f"{k} of {total} nodes ({k / max(total, 1):.0%}) could not be sized by shape inference and are left out "
                f"of the cost ({flops}): {', '.join(self.unknown)}. Give every dynamic axis with --shapes; if they "
                "are all given, the graph computes a shape this planner cannot follow: plan the model exported "
                "with static shapes")

    def by_class(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for o in self.ops:
            c = out.setdefault(o.op_class, {"count": 0, "flops": 0.0, "bytes": 0.0})
            c["count"] += 1
            c["flops"] += o.flops
            c["bytes"] += 0.0 if o.fused else o.bytes
        return out

    def to_dict(self, *, ops: bool = False) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("ops", "edges")}
        d["input_shapes"] = {k: list(v) for k, v in self.input_shapes.items()}
        d["output_shapes"] = {k: list(v) for k, v in self.output_shapes.items()}
        d["unknown"], d["notes"] = list(self.unknown), list(self.notes)
        d["bytes"] = self.bytes
        d["by_class"] = self.by_class()
        if ops:
            d["ops"] = [o.to_dict() for o in self.ops]
        return d
