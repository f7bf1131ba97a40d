"""Step 4a, FP16: the graph's float tensors and weights in half precision; inputs and outputs stay FP32.

Uses ONNX Runtime's own converter (``onnxruntime.transformers.float16``, shipped with onnxruntime: no
extra package). Ops that lose accuracy or overflow in FP16 stay FP32 behind Cast nodes (the block list):
exponentials, logs, powers and square roots, reductions that sum many values, normalization statistics,
and the non-float ops the converter's default list names. ``fp16_block_ops`` adds to the list.
A TensorRT 11 engine built from this graph runs in FP16 because the graph says so (strongly typed);
TensorRT 10 gets the FP16 flag from the build plan.
"""

from __future__ import annotations

import logging
from typing import Any

from xinfer_sdk._lazy import require
from xinfer_sdk.errors import ConversionError

from . import graph
from .pipeline import Skip

log = logging.getLogger(__name__)

# Numerically sensitive in FP16: range (Exp, Pow overflow past 65504), precision of long sums
# (ReduceSum/Mean, LayerNorm statistics), tiny epsilons (Sqrt/Reciprocal of variances underflow).
SENSITIVE_OPS = (
    "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL2",
    "ReduceLogSumExp", "ReduceProd", "CumSum", "Softplus", "LayerNormalization", "GroupNormalization",
    "InstanceNormalization", "RandomNormal", "RandomUniform", "Einsum",
)


def block_list(extra: tuple[str, ...] = ()) -> list[str]:
    float16 = require("onnxruntime.transformers.float16", extra="build", purpose="FP16 conversion")
    return sorted({*float16.DEFAULT_OP_BLOCK_LIST, *SENSITIVE_OPS, *extra})


# ONNX Runtime's FP16 converter breaks the subgraphs of control-flow ops (a Cast it adds inside an If branch
# names a tensor of the other branch): they stay FP32 with their subgraphs (TensorRT 10's FP16 flag still applies)
CONTROL_FLOW = ("If", "Loop", "Scan")


def convert(model, *, extra_block: tuple[str, ...] = ()):
    float16 = require("onnxruntime.transformers.float16", extra="build", purpose="FP16 conversion")
    flow = tuple(sorted({n.op_type for n in model.graph.node} & set(CONTROL_FLOW)))
    blocked = block_list((*extra_block, *flow))
    unique_subgraph_initializers(model)
    try:
        return float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked), blocked
    except Exception as exc:
        raise ConversionError(f"FP16 conversion failed: {type(exc).__name__}: {exc}") from None


def unique_subgraph_initializers(model) -> int:
    """Rename initializers that share a name with one in another graph (the branches of an If after
    simplification: Silero VAD's 8 kHz and 16 kHz branches), with their uses; the FP16 converter needs
    every initializer name unique across the model. Returns how many were renamed."""
    from onnx import AttributeProto

    seen: set[str] = set()
    count = 0

    def subgraphs(g):
        for n in g.node:
            for a in n.attribute:
                if a.type == AttributeProto.GRAPH:
                    yield a.g
                elif a.type == AttributeProto.GRAPHS:
                    yield from a.graphs

    def rename_uses(g, renames):
        for n in g.node:
            for i, name in enumerate(n.input):
                if name in renames:
                    n.input[i] = renames[name]
        for sub in subgraphs(g):
            rename_uses(sub, renames)

    def walk(g):
        nonlocal count
        renames = {}
        for t in g.initializer:
            if t.name in seen:
                new = f"{t.name}__g{count}"
                renames[t.name], t.name = new, new
                count += 1
            seen.add(t.name)
        if renames:
            rename_uses(g, renames)
        for sub in subgraphs(g):
            walk(sub)

    walk(model.graph)
    return count


def fp16_step(ctx) -> tuple[str, dict[str, Any]]:
    if ctx.precision != "fp16":
        raise Skip(f"precision is {ctx.precision}")
    model = graph.load(ctx.fp32_onnx)
    converted, blocked = convert(model, extra_block=ctx.options.fp16_block_ops)
    present = {n.op_type for n in model.graph.node}
    kept = sorted(present & set(blocked))
    half = sum(1 for t in converted.graph.initializer if t.data_type == 10)
    path = ctx.scratch / "fp16.onnx"
    graph.save(converted, path)
    ctx.model_onnx = path
    return (f"{half} weight tensors in FP16; kept in FP32: {', '.join(kept) or 'none'}",
            {"blocked_ops_present": kept, "fp16_initializers": half, "io": "fp32"})
