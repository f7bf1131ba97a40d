"""Did the engine get the precision we asked for? Layer precisions from TensorRT's engine inspector.

After a build, ``inspect_engine`` deserializes the plan, binds an execution context at the plan's opt shapes
(without one, a dynamic-shape engine reports "N/A due to dynamic shapes" instead of formats) and reads
``engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)``. That needs the
engine built with ``config.profiling_verbosity = ProfilingVerbosity.DETAILED``; the default
(LAYER_NAMES_ONLY) lists names only (TensorRT "Engine Inspector" docs, IEngineInspector API reference).

``summarize`` (pure, tested on CPU) reads the JSON: ``{"Layers": [{"Name", "LayerType", "ParameterType",
"Inputs": [{"Name", "Dimensions", "Format/Datatype"}], "Outputs": [...], "Weights": {"Type", "Count"}, ...}],
"Bindings": [...]}``. The format strings ("Row major linear FP32", "Channel major FP16 format where channel %
8 == 0", "Thirty-two wide channel vectorized row major Int8 format", "Row major linear BFloat16 format",
kgen's "Half"/"Float"/"BFloat16"/"FP8"...) are the ones NVIDIA's own engine explorer maps
(NVIDIA/TensorRT tools/experimental/trt-engine-explorer/trex/activations.py). Like trex (layer.py), a
layer's precision is that of its inputs: here the lowest floating type among them, so a Quantize layer
(FP32 in, INT8 out) counts as FP32 and the INT8 convolution after it as INT8.

``verdict``: "failed" when no FLOP-bearing layer (convolution, matrix multiply, fused Myelin graph; else any
compute layer) runs in the requested precision, e.g. an "fp16" engine whose layers are all FP32: the
TensorRT 11 strongly typed build of an FP32 graph. "unverified" when the inspector gave no formats.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

# Formats as the engine inspector writes them, most specific first ("UInt8" before "Int8").
_FORMAT_PRECISION = (
    (re.compile(r"n/a|unknown format|^none$", re.I), None),
    (re.compile(r"bfloat16|\bbf16\b", re.I), "bf16"),
    (re.compile(r"\bfp16\b|\bhalf\b", re.I), "fp16"),
    (re.compile(r"\bfp32\b|\bfloat\b", re.I), "fp32"),
    (re.compile(r"\bfp8\b|e4m3|e5m2", re.I), "fp8"),
    (re.compile(r"\bfp4\b|e2m1", re.I), "fp4"),
    (re.compile(r"\buint8\b", re.I), "uint8"),
    (re.compile(r"\bint8\b", re.I), "int8"),
    (re.compile(r"\bint4\b", re.I), "int4"),
    (re.compile(r"\bint32\b", re.I), "int32"),
    (re.compile(r"\bint64\b", re.I), "int64"),
    (re.compile(r"\bbool\b", re.I), "bool"),
    (re.compile(r"\bdouble\b|\bfp64\b", re.I), "fp64"),
)
# Lower = fewer bits; a layer's precision is the lowest of its floating inputs.
_RANK = {"fp4": 0, "int4": 0, "fp8": 1, "int8": 2, "fp16": 3, "bf16": 3, "fp32": 4, "fp64": 5}
_BOOKKEEPING = re.compile(r"^(reformat|noop|no-op|shuffle|constant|identity|cast|quantize|dequantize|shape|slice|"
                          r"concatenation|gather|assertion|condition|loop.*|iterator|trip.*|recurrence|fill)$", re.I)
_FLOP = re.compile(r"conv|gemm|matmul|matrixmultiply|fullyconnected|deconv|attention|myelin|foreign", re.I)
# Precisions the check accepts as "the requested precision happened"
_ACCEPT = {"fp16": {"fp16"}, "bf16": {"bf16"}, "int8": {"int8"}, "fp8": {"fp8"}, "fp4": {"fp4"}}
_LABEL = {"flop_layers": "FLOP layers", "compute_layers": "compute layers"}
SOURCE = "TensorRT engine inspector (ProfilingVerbosity.DETAILED, context at the plan's opt shapes)"


def tensor_precision(fmt: Any) -> str | None:
    """'Row major linear FP16 format' -> 'fp16'; None when the inspector gave no format."""
    text = str(fmt or "").strip().rstrip(".")
    if not text:
        return None
    for pattern, precision in _FORMAT_PRECISION:
        if pattern.search(text):
            return precision
    return None


def _floats(tensors: Any) -> list[str]:
    out = []
    for t in tensors or ():
        p = tensor_precision(t.get("Format/Datatype") if isinstance(t, Mapping) else None)
        if p in _RANK:
            out.append(p)
    return out


def layer_precision(layer: Mapping[str, Any]) -> str | None:
    """Lowest floating precision among the inputs; else the outputs; else the weights' type."""
    for group in (_floats(layer.get("Inputs")), _floats(layer.get("Outputs"))):
        if group:
            return min(group, key=lambda p: _RANK[p])
    weights = layer.get("Weights")
    if isinstance(weights, Mapping):
        p = tensor_precision(weights.get("Type"))
        return p if p in _RANK else None
    return None


def _kind(layer: Mapping[str, Any]) -> str:
    return str(layer.get("ParameterType") or layer.get("LayerType") or "")


def is_bookkeeping(layer: Mapping[str, Any]) -> bool:
    return bool(_BOOKKEEPING.match(_kind(layer))) and not _FLOP.search(str(layer.get("LayerType") or ""))


def is_flop_bearing(layer: Mapping[str, Any]) -> bool:
    return bool(_FLOP.search(f"{layer.get('ParameterType') or ''} {layer.get('LayerType') or ''}"))


def summarize(info: str | Mapping[str, Any], requested: str) -> dict[str, Any]:
    """Counts per precision (compute layers and FLOP-bearing layers), and the verdict for ``requested``."""
    try:
        data = json.loads(info) if isinstance(info, (str, bytes)) else dict(info)
    except ValueError as exc:
        return _unverified(requested, f"the inspector's output is not JSON ({exc})")
    layers = data.get("Layers") if isinstance(data, Mapping) else None
    if not isinstance(layers, Sequence) or not layers:
        return _unverified(requested, "the inspector listed no layers")
    detailed = [ly for ly in layers if isinstance(ly, Mapping)]
    if not detailed:
        return _unverified(requested, "the inspector gave layer names only (the engine was not built with "
                                      "ProfilingVerbosity.DETAILED)", layers=len(layers))
    compute, flop, unknown = Counter(), Counter(), 0
    for layer in detailed:
        if is_bookkeeping(layer):
            continue
        p = layer_precision(layer)
        if p is None:
            unknown += 1
            continue
        compute[p] += 1
        if is_flop_bearing(layer):
            flop[p] += 1
    basis, population = ("flop_layers", flop) if flop else ("compute_layers", compute)
    total = sum(population.values())
    summary: dict[str, Any] = {
        "source": SOURCE, "requested": requested, "layers": len(layers), "compute_layers": dict(sorted(compute.items())),
        "flop_layers": dict(sorted(flop.items())), "unknown_format_layers": unknown, "basis": basis,
        "share": {p: round(n / total, 4) for p, n in sorted(population.items())} if total else {},
    }
    if not total:
        return {**summary, **_unverified(requested, "the inspector gave no tensor formats (dynamic shapes without "
                                                    "an execution context?)", layers=len(layers))}
    accept = _ACCEPT.get(requested)
    if accept is None:  # fp32 / tf32: nothing lower was asked for
        return {**summary, "verdict": "ok", "reason": f"{requested} requested; recorded only"}
    hit = sum(n for p, n in population.items() if p in accept)
    if hit == 0:
        return {**summary, "verdict": "failed",
                "reason": f"no {_LABEL[basis][:-1]} runs in {requested.upper()} ({describe(summary)})"}
    return {**summary, "verdict": "ok", "reason": f"{hit} of {total} {_LABEL[basis]} in {requested.upper()}"}


def _unverified(requested: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"source": SOURCE, "requested": requested, "verdict": "unverified", "reason": reason, **extra}


def describe(summary: Mapping[str, Any]) -> str:
    """'FLOP layers: fp16 12 (92%), fp32 1 (8%); 41 layers'."""
    share = summary.get("share") or {}
    counts = summary.get(summary.get("basis") or "flop_layers") or {}
    what = _LABEL.get(summary.get("basis") or "flop_layers", "layers")
    if not counts:
        return f"{summary.get('verdict', '?')}: {summary.get('reason', '')}"
    parts = [f"{p} {n} ({share.get(p, 0):.0%})" for p, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return f"{what}: {', '.join(parts)}; {summary.get('layers')} layers"


# ----------------------------------------------------------------------------------------------------------
# On the GPU: the calls handed to TensorRT (checked against the documented API; exercised in tests/gpu)
def set_detailed_profiling(trt: ModuleType, config: Any) -> bool:
    """``config.profiling_verbosity = ProfilingVerbosity.DETAILED`` (IBuilderConfig, TensorRT 8.2+)."""
    verbosity = getattr(getattr(trt, "ProfilingVerbosity", None), "DETAILED", None)
    if verbosity is None:
        return False
    config.profiling_verbosity = verbosity
    return True


def inspect_engine(trt: ModuleType, engine: Any, plan: Mapping[str, Any]) -> dict[str, Any]:
    """Layer precisions of a deserialized engine, via a context bound at the plan's opt shapes."""
    requested = str(plan.get("precision"))
    try:
        context = engine.create_execution_context()
        for name, rng in ((plan.get("profiles") or [{}])[0] or {}).items():
            if context is not None and not context.set_input_shape(name, tuple(rng["opt"])):
                log.debug("engine check: set_input_shape(%s, %s) refused", name, rng["opt"])
        inspector = engine.create_engine_inspector()
        if context is not None:
            # TensorRT 10/11 name it execution_context (8.x: context)
            attr = "execution_context" if hasattr(inspector, "execution_context") else "context"
            setattr(inspector, attr, context)
        info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    except Exception as exc:  # an inspection failure never fails the build; it is recorded as unverified
        return _unverified(requested, f"engine inspector failed: {type(exc).__name__}: {exc}")
    finally:
        context = None  # noqa: F841 - the context goes before the engine
    return summarize(info, requested)
