"""Step 4a', BF16: the graph's float tensors and weights in bfloat16; inputs and outputs stay FP32.

TensorRT 11 is strongly typed (``BuilderFlag.BF16`` was removed): a BF16 engine needs a graph whose tensors
are BF16. ONNX Runtime has no BF16 converter, so this step converts with the ONNX schemas as the rule book:

- a node runs in BF16 when its float output's type parameter allows ``tensor(bfloat16)`` at the model's
  opset and the op is not on the block list (the FP16 step's numerically sensitive ops, ONNX Runtime's
  non-float ops, control flow, other domains); its float inputs get Casts where the producer is FP32;
- ops that take BF16 only from opset 22 (Conv, pooling, ...): the graph is upgraded to opset 22 with
  ONNX's version converter first; if that fails, those ops stay FP32 and the report names them;
- weights are rounded to nearest-even BF16 (an initializer also used by an FP32 op keeps an FP32 copy);
  Constant/ConstantOfShape/Random* outputs stay FP32 and are cast where a BF16 op reads them;
- the result must pass ONNX's strict, type-checked shape inference, else ConversionError.

ONNX Runtime's CPU provider cannot run the result (1.32 has BF16 kernels for Cast only, not Add/MatMul/
Relu...), so the accuracy gate runs ``emulate(graph)``: the same graph in FP32 arithmetic with the BF16
weights and every BF16 tensor rounded to BF16 through Cast pairs, i.e. BF16 storage between ops and FP32
inside them, as TensorRT's BF16 kernels accumulate in FP32.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import numpy as np

from xinfer_sdk.errors import ConversionError

from . import graph
from .fp16 import SENSITIVE_OPS
from .pipeline import Skip

log = logging.getLogger(__name__)

FLOAT, BF16 = 1, 16  # onnx.TensorProto.FLOAT / BFLOAT16
BF16_OPSET = 22  # Conv, ConvTranspose, pooling, ... accept tensor(bfloat16) from opset 22
_STRUCTURAL = ("If", "Loop", "Scan", "SequenceMap", "CastLike")  # kept FP32: types flow through subgraphs/attrs
_FP32_SOURCES = ("Constant", "ConstantOfShape", "EyeLike", "RandomNormal", "RandomUniform", "RandomNormalLike",
                 "RandomUniformLike", "Multinomial", "Bernoulli")
# ONNX Runtime's float16 converter's default block list (non-float and ML ops), fixed here so the step needs
# no onnxruntime import: onnxruntime.transformers.float16.DEFAULT_OP_BLOCK_LIST
_ORT_DEFAULT_BLOCK = (
    "ArrayFeatureExtractor", "Binarizer", "CastMap", "CategoryMapper", "DictVectorizer", "FeatureVectorizer",
    "Imputer", "LabelEncoder", "LinearClassifier", "LinearRegressor", "Normalizer", "OneHotEncoder",
    "RandomUniformLike", "SVMClassifier", "SVMRegressor", "Scaler", "TreeEnsembleClassifier",
    "TreeEnsembleRegressor", "TreeEnsemble", "ZipMap", "NonMaxSuppression", "TopK", "RoiAlign", "Range", "CumSum",
    "Min", "Max", "Upsample",
)


def block_list(extra: tuple[str, ...] = ()) -> list[str]:
    return sorted({*SENSITIVE_OPS, *_ORT_DEFAULT_BLOCK, *_STRUCTURAL, *extra})


def to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even; NaN stays NaN."""
    f = np.ascontiguousarray(values, dtype=np.float32)
    u = f.view(np.uint32).astype(np.uint64)
    bits = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(f), np.uint16(0x7FC0), bits)


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def round_to_bf16(values: np.ndarray) -> np.ndarray:
    """The float32 values BF16 storage keeps (for tests and the emulation)."""
    return from_bf16_bits(to_bf16_bits(values)).reshape(np.shape(values))


def _onnx():
    """onnx with the submodules used here loaded (numpy_helper, version_converter, shape_inference)."""
    onnx = graph.onnx()
    importlib.import_module("onnx.numpy_helper")
    importlib.import_module("onnx.version_converter")
    return onnx


def _tensor(onnx, name: str, data_type: int, dims, raw: bytes):
    t = onnx.TensorProto()
    t.name, t.data_type, t.raw_data = name, data_type, raw
    t.dims.extend(int(d) for d in dims)
    return t


# ----------------------------------------------------------------------------------------------------------
def _schema_allows(schema, slot_type: str) -> bool:
    allowed = {tc.type_param_str: set(tc.allowed_type_strs) for tc in schema.type_constraints}
    return "tensor(bfloat16)" in allowed.get(slot_type, {slot_type})


def _slot_types(schema, n: int, output: bool) -> list[str]:
    formal = list(schema.outputs if output else schema.inputs)
    if not formal:
        return []
    return [(formal[i] if i < len(formal) else formal[-1]).type_str for i in range(n)]


def _outer_names(g) -> set[str]:
    """Names read inside subgraphs (outer-scope references): their producers stay FP32."""
    names: set[str] = set()
    for node in g.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                for inner in sub.node:
                    names.update(i for i in inner.input if i)
                names |= _outer_names(sub)
    return names


def _float_types(onnx, model) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # typed parts are enough; strict inference on the result decides
        log.debug("bf16: shape inference on the FP32 graph failed: %s", exc)
        inferred = model
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def _plan_nodes(onnx, model, opset: int, blocked: set[str]) -> tuple[list[dict[str, Any]], set[str]]:
    """Per node: low (BF16) or not and what each float input slot needs; plus ops kept FP32 for the opset."""
    types = _float_types(onnx, model)
    outer = _outer_names(model.graph)
    plans, no_bf16 = [], set()
    for node in model.graph.node:
        is_float_in = [bool(n) and types.get(n) == FLOAT for n in node.input]
        is_float_out = [bool(n) and types.get(n) == FLOAT for n in node.output]
        p = {"low": False, "need": [None] * len(node.input), "float_out": is_float_out}
        schema = None
        if node.domain in ("", "ai.onnx"):
            try:
                schema = onnx.defs.get_schema(node.op_type, opset, "")
            except Exception:
                schema = None
        if node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            p["low"] = to == FLOAT and node.op_type not in blocked and not (set(node.output) & outer)
            plans.append(p)  # a Cast reads any type: no cast in front of it
            continue
        fixed_fp32 = (schema is None or node.op_type in blocked or node.op_type in _FP32_SOURCES
                      or bool(set(node.output) & outer))
        if not fixed_fp32 and any(is_float_out):
            out_types = _slot_types(schema, len(node.output), True)
            p["low"] = all(_schema_allows(schema, t)
                           for t, f in zip(out_types, is_float_out) if f)
            if not p["low"]:
                no_bf16.add(node.op_type)
        in_types = _slot_types(schema, len(node.input), False) if schema is not None else [""] * len(node.input)
        for i, f in enumerate(is_float_in):
            if not f:
                continue
            ok = schema is not None and _schema_allows(schema, in_types[i])
            if p["low"]:
                p["need"][i] = "bf16" if ok else "fp32"
            elif any(is_float_out) or not ok or fixed_fp32:
                p["need"][i] = "fp32"
            # else: no float output and the slot takes BF16 (Shape, Size, ArgMax...): read as it comes
        plans.append(p)
    return plans, no_bf16


def _rewrite(onnx, model, plans: list[dict[str, Any]]) -> dict[str, int]:
    """Apply the plan in place: BF16 initializers, Casts at FP32/BF16 borders, FP32 graph outputs."""
    g = model.graph
    helper = onnx.helper
    inits = {t.name: t for t in g.initializer}
    prec: dict[str, str] = {}
    casts: dict[tuple[str, str], str] = {}
    nodes, counts = [], {"casts": 0, "bf16_initializers": 0}

    def source(name: str, need: str) -> str:
        have = prec.get(name, "fp32")
        if have == need:
            return name
        key = (name, need)
        if key not in casts:
            if name in inits and need == "bf16":
                arr = onnx.numpy_helper.to_array(inits[name]).astype(np.float32)
                g.initializer.append(_tensor(onnx, name + "__bf16", BF16, arr.shape, to_bf16_bits(arr).tobytes()))
                counts["bf16_initializers"] += 1
                casts[key] = name + "__bf16"
            else:
                casts[key] = f"{name}__to_{need}"
                nodes.append(helper.make_node("Cast", [name], [casts[key]], to=BF16 if need == "bf16" else FLOAT,
                                              name=f"xinfer_cast_{len(casts)}"))
                counts["casts"] += 1
        return casts[key]

    for node, p in zip(list(g.node), plans):
        for i, need in enumerate(p["need"]):
            if need is not None:
                node.input[i] = source(node.input[i], need)
        if p["low"] and node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to":
                    a.i = BF16
        for out, f in zip(node.output, p["float_out"]):
            if f:
                prec[out] = "bf16" if p["low"] else "fp32"
        nodes.append(node)
    for out in g.output:  # FP32 at the graph's edge
        if prec.get(out.name) == "bf16":
            inner = out.name + "__bf16"
            for n in nodes:
                n.output[:] = [inner if o == out.name else o for o in n.output]
                n.input[:] = [inner if i == out.name else i for i in n.input]
            nodes.append(helper.make_node("Cast", [inner], [out.name], to=FLOAT, name=f"xinfer_out_{out.name}"))
            counts["casts"] += 1
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.value_info[:]
    return counts


def convert(model, *, extra_block: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:
    """(BF16 graph, report). ConversionError when the result is not a valid, type-consistent ONNX graph."""
    onnx = _onnx()

    blocked = set(block_list(extra_block))
    work = onnx.ModelProto()
    work.CopyFrom(model)
    opset = graph.opset(work)
    plans, no_bf16 = _plan_nodes(onnx, work, opset, blocked)
    upgraded = None
    if no_bf16 and opset < BF16_OPSET:
        try:
            newer = onnx.version_converter.convert_version(work, BF16_OPSET)
            onnx.checker.check_model(newer)
            upgraded, work, opset = graph.opset(model), newer, BF16_OPSET
            plans, no_bf16 = _plan_nodes(onnx, work, opset, blocked)
        except Exception as exc:
            log.warning("bf16 | opset %d -> %d upgrade failed (%s); %s stay FP32", opset, BF16_OPSET,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__, ", ".join(sorted(no_bf16)))
    counts = _rewrite(onnx, work, plans)
    try:
        checked = onnx.shape_inference.infer_shapes(work, check_type=True, strict_mode=True)
        onnx.checker.check_model(checked)
    except Exception as exc:
        raise ConversionError(f"BF16 conversion made an invalid graph: {str(exc).splitlines()[0]}",
                              hint="add the op named there to --fp16-block-ops, or build fp16") from None
    present = {n.op_type for n in model.graph.node}
    low = sum(1 for p in plans if p["low"])
    report = {"bf16_nodes": low, "nodes": len(plans), "bf16_initializers": counts["bf16_initializers"],
              "casts": counts["casts"], "kept_fp32": sorted(present & blocked), "no_bf16_at_opset": sorted(no_bf16),
              "opset": opset, "upgraded_from_opset": upgraded, "io": "fp32"}
    return checked, report


def bf16_step(ctx) -> tuple[str, dict[str, Any]]:
    if ctx.precision != "bf16":
        raise Skip(f"precision is {ctx.precision}")
    converted, report = convert(graph.load(ctx.fp32_onnx), extra_block=ctx.options.fp16_block_ops)
    if report["bf16_nodes"] == 0:
        raise ConversionError("BF16 conversion left every op in FP32 (nothing in this graph runs in BF16 at its "
                              f"opset {report['opset']}: {', '.join(report['no_bf16_at_opset']) or 'all blocked'})",
                              hint="build fp16, or export the model at opset 22 or newer")
    path = ctx.scratch / "bf16.onnx"
    graph.save(converted, path)
    ctx.model_onnx = path
    up = f"; opset {report['upgraded_from_opset']} -> {report['opset']}" if report["upgraded_from_opset"] else ""
    kept = sorted(set(report["kept_fp32"]) | set(report["no_bf16_at_opset"]))
    return (f"{report['bf16_nodes']} of {report['nodes']} ops and {report['bf16_initializers']} weight tensors in "
            f"BF16; kept in FP32: {', '.join(kept) or 'none'}{up}", report)


# ----------------------------------------------------------------------------------------------------------
def emulate(bf16_model):
    """The BF16 graph in FP32 arithmetic that ONNX Runtime's CPU provider runs: BF16 weights as their exact
    FP32 values, and every BF16 tensor rounded to BF16 (Cast to BF16 and back) where it is produced."""
    onnx = _onnx()
    m = onnx.ModelProto()
    m.CopyFrom(bf16_model)
    g = m.graph
    typed = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True).graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*typed.input, *typed.output, *typed.value_info]}
    for i, t in enumerate(list(g.initializer)):
        if t.data_type == BF16:
            bits = np.frombuffer(t.raw_data, dtype=np.uint16) if t.raw_data else np.asarray(t.int32_data, np.uint16)
            g.initializer[i].CopyFrom(_tensor(onnx, t.name, FLOAT, t.dims, from_bf16_bits(bits).tobytes()))
    nodes = []
    for node in g.node:
        nodes.append(node)
        for k, out in enumerate(node.output):
            if out and types.get(out) == BF16:
                raw, rounded = out + "__emu_raw", out + "__emu_bf16"
                node.output[k] = raw
                if node.op_type == "Cast":  # a Cast to BF16 now casts to FP32; the pair below rounds
                    for a in node.attribute:
                        if a.name == "to":
                            a.i = FLOAT
                nodes.append(onnx.helper.make_node("Cast", [raw], [rounded], to=BF16))
                nodes.append(onnx.helper.make_node("Cast", [rounded], [out], to=FLOAT))
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    return m
