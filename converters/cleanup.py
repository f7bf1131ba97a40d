"""Step 3, clean-up: check, simplify (constant folding, dead nodes, Conv+BN, MatMul+Add), infer shapes.

``onnx.checker`` first (a corrupt or invalid graph stops here with one line), then onnxslim (standard ONNX
ops only, so the result stays parseable by TensorRT), shape inference, and the checker again. The IO spec
of the manifest is read from the result; ``--shapes`` names and ranks are checked against it.
"""

from __future__ import annotations

import logging
from typing import Any

from xinfer_sdk._lazy import require
from xinfer_sdk.errors import ConversionError, UserError
from xinfer_sdk.shapes import check_names

from . import graph
from .export import fixed_batch_note

log = logging.getLogger(__name__)


def cleanup_step(ctx) -> tuple[str, dict[str, Any]]:
    onnx = graph.onnx()
    model = graph.load(ctx.raw_onnx, what="ONNX model")
    nodes_before = len(model.graph.node)
    _check(onnx, model, "the input graph")
    opset = graph.opset(model)
    _check_opset(ctx, opset)
    simplified = _slim(model)
    _check(onnx, simplified, "the simplified graph")
    _restore_io_dims(model, simplified)
    # ONNX Runtime's symbolic pass costs tens of seconds on Resize-heavy graphs (sympy simplifying floor(scale x dim)
    # for every Resize: ~26 s on a 36-Resize text detector) and the axes after a Resize are expressions, not input
    # names: there it runs only where a quantizer needs its shapes anyway (INT8 / FP8 pre-processing reuses them)
    thorough = ctx.precision in ("int8", "fp8") or not any(n.op_type == "Resize" for n in simplified.graph.node)
    _name_output_dims(simplified, thorough=thorough)
    ctx.fp32_onnx = ctx.scratch / "fp32.onnx"
    graph.save(simplified, ctx.fp32_onnx)
    ctx.inputs, ctx.outputs, ctx.batched = graph.io_specs(simplified)
    check_input_shapes(ctx)
    if not ctx.batched:
        ctx.warnings.append(fixed_batch_note(ctx))
    nodes_after = len(simplified.graph.node)
    return (f"{nodes_before} -> {nodes_after} nodes, opset {opset}",
            {"nodes_before": nodes_before, "nodes_after": nodes_after, "opset": opset, "batched": ctx.batched})


def _check(onnx, model, what: str) -> None:
    try:
        if model.ByteSize() < graph.EXTERNAL_DATA_BYTES:
            onnx.checker.check_model(model)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"{what} is not a valid ONNX model: {first}",
                              hint="re-export it; `python -m onnx.checker` gives the details") from None


def _check_opset(ctx, opset: int) -> None:
    versions = ctx.profile.tensorrt.versions
    if ctx.profile.kind == "cpu" or not versions:
        return
    limit = min(graph.TRT_MAX_OPSET.get(v, graph.EXPORT_OPSET) for v in versions)
    if opset > limit:
        ctx.warnings.append(f"opset {opset} is newer than TensorRT {min(versions)} parses (<= {limit}); the engine "
                            f"build on the target may fail: re-export with --opset {graph.EXPORT_OPSET}")


def _slim(model):
    """onnxslim's folding and fusions; on any failure keep the checked input graph (logged, not fatal)."""
    onnxslim = require("onnxslim", purpose="simplifying ONNX graphs")
    try:
        out = onnxslim.slim(model)
    except Exception as exc:  # onnxslim is best-effort: an unsupported pattern must not stop the build
        log.warning("cleanup                             | onnxslim failed (%s); keeping the graph as is", exc)
        return _infer_shapes(model)
    return out if out is not None else _infer_shapes(model)


def _infer_shapes(model):
    onnx = graph.onnx()
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:
        log.warning("cleanup                             | shape inference failed (%s)", exc)
        return model


def _restore_io_dims(before, after) -> None:
    """Keep the exporter's dim names on inputs and outputs (simplifiers sometimes rename or drop them)."""
    by_name = {v.name: v for v in [*before.graph.input, *before.graph.output]}
    for v in [*after.graph.input, *after.graph.output]:
        old = by_name.get(v.name)
        if old is None:
            continue
        new_dims = v.type.tensor_type.shape.dim
        old_dims = old.type.tensor_type.shape.dim
        if len(new_dims) != len(old_dims):
            continue
        for nd, od in zip(new_dims, old_dims):
            if od.HasField("dim_param") and od.dim_param and not nd.HasField("dim_value"):
                nd.dim_param = od.dim_param


def _name_output_dims(model, *, thorough: bool = True) -> None:
    """Output axes the exporter left with generated names (``LayerNormalizationhidden_dim_1``) get the input
    axis name they follow (``seq``): first by ONNX's own shape inference (milliseconds), then, for what is left and
    when ``thorough``, by ONNX Runtime's symbolic shape inference (tens of seconds on Resize-heavy graphs)."""
    known = {d.dim_param for v in graph.graph_inputs(model) for d in v.type.tensor_type.shape.dim if d.dim_param}

    def stale_axes():
        return [(o, i) for o in model.graph.output for i, d in enumerate(o.type.tensor_type.shape.dim)
                if d.HasField("dim_param") and d.dim_param not in known]

    def probe():
        p = graph.onnx().ModelProto()
        p.CopyFrom(model)
        for o in p.graph.output:
            for d in o.type.tensor_type.shape.dim:
                if d.HasField("dim_param") and d.dim_param not in known:
                    d.Clear()
        return p

    if not stale_axes():
        return
    try:
        _apply_names(stale_axes(), graph.onnx().shape_inference.infer_shapes(probe(), data_prop=True).graph.output,
                     known)
    except Exception as exc:  # best effort: names are cosmetic
        log.debug("shape inference failed: %s", exc)
    stale = stale_axes()
    if not stale or not thorough:
        return
    try:
        value_info, inferred_outputs = _symbolic(probe())
    except Exception as exc:  # best effort: names are cosmetic, shapes stay symbolic either way
        log.debug("symbolic shape inference failed: %s", exc)
        return
    # keep what the (slow, on Resize-heavy graphs: ~30 s for a 672-node detector) inference found: the INT8 / FP8
    # pre-processing then needs no second symbolic pass (``shapes_complete``)
    outputs = {o.name for o in model.graph.output}
    del model.graph.value_info[:]
    model.graph.value_info.extend(v for v in value_info if v.name not in outputs)
    _mark(model)
    _apply_names(stale, inferred_outputs, known)


_SYMBOLIC_CACHE: dict[str, tuple] = {}  # graph digest -> (value_info, outputs): one process building several profiles
_CACHE_MAX_BYTES = 64 << 20  # graphs bigger than this are not hashed (their inference is fast: no Resize chains)


def _symbolic(probe) -> tuple:
    """ONNX Runtime's symbolic shape inference of ``probe``: (value_info, graph outputs), remembered for the last
    two graphs seen, so that building the same model for several profiles in one process pays for it once."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    key = None
    if probe.ByteSize() <= _CACHE_MAX_BYTES:
        import hashlib

        key = hashlib.sha256(probe.SerializeToString(deterministic=True)).hexdigest()
        if key in _SYMBOLIC_CACHE:
            return _SYMBOLIC_CACHE[key]
    inferred = SymbolicShapeInference.infer_shapes(probe, auto_merge=True)
    got = (tuple(inferred.graph.value_info), tuple(inferred.graph.output))
    if key is not None:
        while len(_SYMBOLIC_CACHE) >= 2:
            _SYMBOLIC_CACHE.pop(next(iter(_SYMBOLIC_CACHE)))
        _SYMBOLIC_CACHE[key] = got
    return got


SYMBOLIC_MARK = "xinfer.symbolic_shapes"  # metadata: value_info holds ONNX Runtime's symbolic shape inference


def _mark(model) -> None:
    for prop in model.metadata_props:
        if prop.key == SYMBOLIC_MARK:
            prop.value = "1"
            return
    model.metadata_props.add(key=SYMBOLIC_MARK, value="1")


def _apply_names(stale, outputs, known) -> None:
    found = {o.name: o for o in outputs}
    for out, axis in stale:
        new = found.get(out.name)
        dims = new.type.tensor_type.shape.dim if new is not None else []
        if axis < len(dims) and dims[axis].dim_param in known:
            out.type.tensor_type.shape.dim[axis].dim_param = dims[axis].dim_param


def shapes_complete(model) -> bool:
    """Whether the clean-up step ran ONNX Runtime's symbolic shape inference on this graph and kept its result
    (marked ``SYMBOLIC_MARK``) and every tensor a node produces has a typed shape (value_info or a graph output)."""
    if not any(p.key == SYMBOLIC_MARK and p.value == "1" for p in model.metadata_props):
        return False
    typed = {v.name for v in (*model.graph.value_info, *model.graph.output)
             if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}
    return all(o in typed for n in model.graph.node for o in n.output if o)


def check_input_shapes(ctx) -> None:
    """--shapes must name real inputs, with their rank, and leave fixed dims alone."""
    shapes = ctx.options.shapes
    check_names(shapes, [t.name for t in ctx.inputs])
    for spec in ctx.inputs:
        r = shapes.get(spec.name)
        if r is None:
            continue
        if len(r.min) != len(spec.shape):
            raise UserError(f"--shapes {spec.name}: the input has rank {len(spec.shape)} "
                            f"({'x'.join('?' if d < 0 else str(d) for d in spec.shape)}), not {len(r.min)}")
        for axis, d in enumerate(spec.shape):
            if d > 0 and not (r.min[axis] == r.opt[axis] == r.max[axis] == d):
                raise UserError(f"--shapes {spec.name}: axis {axis} is fixed to {d} in the model, not "
                                f"{r.min[axis]}..{r.max[axis]}")
