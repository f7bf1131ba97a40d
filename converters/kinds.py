"""What an output is, for the accuracy gate: the kind decides the metric (issue 16 item 1).

=========  =====================================================  ==============================================
kind       what it is                                             gated on
=========  =====================================================  ==============================================
class      class scores ``[N, C]``                                top-1 over the class axis (and cosine)
sequence   per-step class scores ``[N, T, C]`` (CTC, tokens)      top-1 per step (and cosine)
map        dense maps ``[N, C, H, W]`` (probability, mask, depth)  cosine, max error, IoU of the thresholded mask
boxes      YOLO-style heads ``[N, 4+C, A]`` or ``[N, A, 4+C]``     boxes decoded and matched (and cosine)
embedding  vectors compared by angle ``[N, D]``                   cosine per sample
raw        anything else                                          cosine (and max error when a limit is set)
=========  =====================================================  ==============================================

The kind comes from the user (``--output-kind NAME=KIND``), else from the graph (the op that makes the
output, seen through reshapes: Softmax over the last axis of a 3-D output is a sequence, a Sigmoid on a
4-D output a map, a Concat of boxes and sigmoid scores a detection head, an L2 normalisation an
embedding), else from the shape alone. Each kind carries the reason it was chosen; the report prints it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

KINDS = ("class", "sequence", "map", "boxes", "embedding", "raw")
# ops that do not change what an output is: the producer is looked for behind them
_PASS_THROUGH = {"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Cast", "Flatten", "Clip"}
_SOFTMAX = {"Softmax", "LogSoftmax"}


def parse_kinds(pairs: Sequence[tuple[str, str]] | Mapping[str, str] | None) -> dict[str, str]:
    """``{output: kind}`` from ``--output-kind`` pairs; a UserError names a kind that does not exist."""
    from xinfer_sdk.errors import UserError

    items = pairs.items() if isinstance(pairs, Mapping) else (pairs or ())
    kinds = {}
    for name, kind in items:
        kind = str(kind).strip().lower()
        if kind not in KINDS:
            raise UserError(f"--output-kind {name}={kind}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        kinds[str(name)] = kind
    return kinds


def check_names(kinds: Mapping[str, str], outputs: Sequence[str]) -> None:
    from xinfer_sdk.errors import UserError

    unknown = [n for n in kinds if n not in outputs]
    if unknown:
        raise UserError(f"--output-kind {unknown[0]}: the model has no output {unknown[0]!r}; its outputs are "
                        f"{', '.join(outputs)}")


# ------------------------------------------------------------------------------------------- from the graph
def _attr(node, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            from onnx import helper

            return helper.get_attribute_value(a)
    return default


def _producers(model) -> dict[str, Any]:
    return {o: n for n in model.graph.node for o in n.output}


def _behind(prod: Mapping[str, Any], name: str):
    """The first op behind ``name`` that is not a reshape/transpose/cast, or None (a graph input)."""
    node, seen = prod.get(name), 0
    while node is not None and node.op_type in _PASS_THROUGH and node.input and seen < 16:
        node, seen = prod.get(node.input[0]), seen + 1
    return node


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def infer(model, outputs: Sequence[Any], user: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """``{output name: (kind, why)}`` for the outputs (TensorSpec-like: ``.name``, ``.shape``) of ONNX ``model``."""
    user = dict(user or {})
    prod = _producers(model) if model is not None else {}
    opset = _opset(model) if model is not None else 13
    out = {}
    for spec in outputs:
        shape = tuple(spec.shape)
        if spec.name in user:
            out[spec.name] = (user[spec.name], "given with --output-kind")
            continue
        node = _behind(prod, spec.name) if prod else None
        out[spec.name] = _from_graph(node, shape, opset, prod) or from_shape(shape)
    return out


def _from_graph(node, shape: tuple[int, ...], opset: int, prod) -> tuple[str, str] | None:
    if node is None:
        return None
    rank, op = len(shape), node.op_type
    if op in _SOFTMAX:
        axis = _attr(node, "axis", -1 if opset >= 13 else 1)
        last = axis in (-1, rank - 1) or (rank == 2 and axis == 1)
        if rank == 2:
            return "class", f"{op} over the class axis of a [N, C] output"
        if rank == 3 and last:
            return "sequence", f"{op} over the last axis of a [N, T, C] output: class scores per step"
        if rank >= 4:
            return "map", f"{op} over the channels of a {rank}-D output: a dense class map"
    if op == "Sigmoid":
        if rank >= 4:
            return "map", f"Sigmoid on a {rank}-D output: a probability map"
        if rank == 2 and shape[1] == 1:
            return "raw", "Sigmoid on a [N, 1] output: one probability per sample (cosine and max error)"
        if rank == 2:
            return "raw", "Sigmoid on a [N, C] output: independent probabilities (multi-label), no single top-1"
    if op == "Concat" and rank == 3 and _boxes_layout(shape) is not None and any(
            _behind(prod, i) is not None and _behind(prod, i).op_type == "Sigmoid" for i in node.input):
        return "boxes", "Concat of box coordinates and sigmoid class scores: a YOLO-style detection head"
    if op == "LpNormalization" or (op == "Div" and len(node.input) == 2 and _is_norm(prod, node.input[1])):
        return "embedding", f"{op} normalises the output to unit length: an embedding"
    return None


def _is_norm(prod, name: str) -> bool:
    node, seen = prod.get(name), 0
    while node is not None and seen < 6:
        if node.op_type in ("ReduceL2", "LpNormalization"):
            return True
        if node.op_type not in ("Sqrt", "Max", "Clip", "Add", "Expand", "ReduceSum", "Pow", "Mul", *_PASS_THROUGH):
            return False
        node, seen = prod.get(node.input[0]), seen + 1
    return False


def _boxes_layout(shape: tuple[int, ...]) -> int | None:
    """The axis (1 or 2) holding 4 box coordinates + class scores of a [N, 4+C, A] / [N, A, 4+C] head, or None."""
    if len(shape) != 3:
        return None
    a, b = shape[1], shape[2]
    if 5 <= a <= 300 and (b < 0 or b >= 8 * a):
        return 1
    if 5 <= b <= 300 and (a < 0 or a >= 8 * b):
        return 2
    return None


def from_shape(shape: tuple[int, ...]) -> tuple[str, str]:
    """The kind a shape suggests when the graph says nothing."""
    rank = len(shape)
    if rank == 2 and (shape[1] >= 2 or shape[1] < 0):
        return "class", "[N, C] output: class scores (by shape; pass --output-kind NAME=KIND if it is not)"
    if rank == 3 and _boxes_layout(shape) is not None and min(d for d in shape[1:] if d > 0) >= 5 \
            and all(d > 0 for d in shape[1:]):
        return "boxes", (f"[N, {shape[1]}, {shape[2]}] output: a YOLO-style detection head (by shape; pass "
                         "--output-kind NAME=KIND if it is not)")
    if rank == 3 and shape[2] >= 2:
        return "sequence", "[N, T, C] output: scores per step (by shape; pass --output-kind NAME=KIND if it is not)"
    if rank >= 4:
        return "map", f"{rank}-D output: a dense map (by shape)"
    return "raw", "no class axis: compared as numbers (cosine, max error)"
