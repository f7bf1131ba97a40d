"""Step 4c, FP8: E4M3 explicit quantization, the form TensorRT compiles into FP8 tensor-core kernels (Ada, Hopper,
Blackwell): QuantizeLinear / DequantizeLinear with FLOAT8E4M3FN zero points, opset 19 or newer.

NVIDIA Model Optimizer's ONNX FP8 recipe, on ONNX Runtime alone (docs/building.md says why, with figures):

1. the cleaned FP32 graph is pre-processed as for INT8 and brought to opset 19 with ONNX's version converter
   (float8 QuantizeLinear / DequantizeLinear exist from opset 19);
2. ``onnxruntime.quantization.quantize_static`` calibrates exactly as the INT8 step does (``--calib`` handling, the
   held-out split, minmax / entropy / percentile, ``CALIB_BATCH``) with a symmetric INT8 scheme on the inputs and
   weights of Conv / MatMul / Gemm only, the ops TensorRT runs in FP8; bias stays FP32;
3. each calibrated range becomes an FP8 scale, ``amax / 448`` (448 is E4M3's largest finite value; the INT8 scale
   was ``amax / 127``); activations per tensor, weights per output channel (``--per-channel``, the profile default);
4. weights are quantized once (round to nearest even, saturating, as QuantizeLinear does) and stored as
   FLOAT8E4M3FN initializers behind a DequantizeLinear; activations keep their QuantizeLinear -> DequantizeLinear.

The accuracy gate executes the result on ONNX Runtime's CPU provider, whose float8 QuantizeLinear /
DequantizeLinear kernels compute what TensorRT's Q/DQ definition says: ``castToFp8(clip(x / s, -448, 448))``.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import numpy as np

from xinfer_sdk._lazy import require
from xinfer_sdk.errors import ConversionError

from . import graph, int8
from .pipeline import Skip

log = logging.getLogger(__name__)

FP8_MAX = 448.0  # largest finite float8 E4M3FN value
INT8_MAX = 127.0  # the symmetric INT8 range the calibration scales refer to
SCALE_FROM_INT8 = INT8_MAX / FP8_MAX  # amax / 127 -> amax / 448
FP8_OPSET = 19  # QuantizeLinear / DequantizeLinear take float8 from opset 19
OP_TYPES = ("Conv", "MatMul", "Gemm")  # what TensorRT fuses into FP8 kernels
FLOAT8E4M3FN, INT8 = 17, 3  # onnx.TensorProto element types
_QDQ = ("QuantizeLinear", "DequantizeLinear")
# ONNX Runtime rewrites that are wrong for float8 Q/DQ: 1.32's ReluQuantRewrite deletes a Relu that feeds a float8
# QuantizeLinear (zero point 0), as if the quantizer clamped at 0 like uint8 does; E4M3 keeps the negatives (digits
# MLP: logits cosine 0.9726 with the rewrite, 0.99955 without). ClipQuantRewrite makes the same range assumption.
# The gate runs FP8 graphs without them (converters/accuracy.py), as TensorRT computes them.
ORT_DISABLED_OPTIMIZERS = ("ReluQuantRewrite", "ClipQuantRewrite")


def scheme(per_channel: bool) -> dict[str, Any]:
    """The FP8 scheme as recorded in the manifest."""
    return {"scheme": "symmetric", "format": "QDQ", "element_type": "float8e4m3fn", "activation_type": "fp8e4m3",
            "weight_type": "fp8e4m3", "activations": "per-tensor",
            "weights": "per-channel" if per_channel else "per-tensor", "scale": "amax / 448",
            "op_types": list(OP_TYPES), "quantize_bias": False, "opset_min": FP8_OPSET}


def fp8_step(ctx) -> tuple[str, dict[str, Any]]:
    if ctx.precision != "fp8":
        raise Skip(f"precision is {ctx.precision}")
    q = require("onnxruntime.quantization", extra="build", purpose="FP8 quantization")
    int8.prepare_data(ctx, what="FP8")
    opts = ctx.options
    src, upgraded = _prepared(ctx, q)
    batch = int8.CALIB_BATCH if ctx.batched else 1
    reader = int8._Reader(ctx.calib_data, batch, ctx.progress)
    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "CalibTensorRangeSymmetric": True,
             "QuantizeBias": False, "AddQDQPairToWeight": True,  # FP32 weights behind Q/DQ: re-quantized to FP8 below
             "OpTypesToExcludeOutputQuantization": list(OP_TYPES),  # inputs only, as TensorRT fuses them
             "QDQDisableWeightAdjustForInt32Bias": True, "CalibStridedMinMax": 1}
    calibrated = ctx.scratch / "fp8-calibrated.onnx"
    muted = int8._MuteRootWarnings()
    try:
        with muted:
            q.quantize_static(str(src), str(calibrated), reader, quant_format=q.QuantFormat.QDQ,
                              op_types_to_quantize=list(OP_TYPES), per_channel=opts.per_channel, reduce_range=False,
                              activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                              calibrate_method=methods[opts.calib_method], extra_options=extra,
                              use_external_data_format=int8._large(src))
    except Exception as exc:
        raise ConversionError(f"FP8 calibration failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if muted.count:
        log.info("fp8                                 | onnxruntime.quantization warned %d time(s), e.g.: %s",
                 muted.count, muted.first)
    model, counts = to_fp8(graph.load(calibrated))
    if not counts["qdq_nodes"]:
        raise ConversionError(f"FP8 quantization found nothing to quantize (no {' / '.join(OP_TYPES)} with "
                              "quantizable inputs)", hint="build fp16 or bf16")
    try:
        graph.onnx().checker.check_model(model)
    except Exception as exc:
        raise ConversionError(f"FP8 quantization made an invalid graph: {str(exc).splitlines()[0]}") from None
    out = ctx.scratch / "fp8.onnx"
    graph.save(model, out)
    ctx.model_onnx = out
    sch = scheme(opts.per_channel)
    ctx.calibration = {
        **sch, "method": opts.calib_method, "per_channel": opts.per_channel, "samples": ctx.calib_data.count,
        "batch": batch, "source": ctx.calib_data.source, "data_sha256": ctx.calib_data.fingerprint(),
        "held_out_for_gate": ctx.eval_data.count if opts.eval is None else 0, **counts,
        "opset": graph.opset(model), "upgraded_from_opset": upgraded, "zero_points": "all 0 (float8e4m3fn)",
        "tool": "onnxruntime.quantization.quantize_static (symmetric ranges) + xinfer converters/fp8.py (E4M3)",
    }
    ctx.progress(ctx.calib_data.count, ctx.calib_data.count, "calibrated")
    up = f"; opset {upgraded} -> {graph.opset(model)}" if upgraded else ""
    return (f"E4M3, activations per-tensor, weights {sch['weights']}, {opts.calib_method}, {ctx.calib_data.count} "
            f"samples, {counts['qdq_nodes']} Q/DQ nodes, {counts['fp8_weights']} FP8 weight tensors{up}",
            {"samples": ctx.calib_data.count, "qdq_nodes": counts["qdq_nodes"]})


def _prepared(ctx, q):
    """The graph to calibrate: ONNX Runtime's pre-processing (when it works), at opset 19 or newer."""
    pre = ctx.scratch / "fp8-pre.onnx"
    try:
        q.quant_pre_process(str(ctx.fp32_onnx), str(pre), skip_symbolic_shape=int8.shaped(ctx.fp32_onnx),
                            auto_merge=True)
    except Exception as exc:  # pre-processing only helps; quantize the cleaned graph without it
        log.warning("fp8                                 | pre-processing failed (%s); quantizing without it", exc)
        pre = ctx.fp32_onnx
    model = graph.load(pre)
    have = graph.opset(model)
    if have >= FP8_OPSET:
        return pre, None
    onnx = graph.onnx()
    importlib.import_module("onnx.version_converter")  # not loaded by ``import onnx``
    try:
        newer = onnx.version_converter.convert_version(model, FP8_OPSET)
        onnx.checker.check_model(newer)
    except Exception as exc:
        raise ConversionError(f"FP8 needs opset {FP8_OPSET} (float8 QuantizeLinear / DequantizeLinear) and ONNX's "
                              f"version converter cannot bring this opset-{have} graph there: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                              hint=f"export the model at opset {FP8_OPSET} or newer (--opset {FP8_OPSET})") from None
    path = ctx.scratch / f"fp8-opset{FP8_OPSET}.onnx"
    graph.save(newer, path)
    return path, have


# ----------------------------------------------------------------------------------------------------------
def to_fp8(model) -> tuple[Any, dict[str, int]]:
    """A symmetric INT8 Q/DQ graph (weights FP32 behind Q/DQ pairs) -> the E4M3 graph: every scale times
    127/448 (amax / 127 -> amax / 448), zero points float8 zeros, weights stored in FP8. Returns (graph, counts)."""
    onnx = graph.onnx()
    nh = onnx.numpy_helper
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    done: set[str] = set()

    def replace(name: str, tensor) -> None:
        inits[name].CopyFrom(tensor)

    for node in g.node:
        if node.op_type not in _QDQ:
            continue
        scale = node.input[1]
        if scale not in inits:
            raise ConversionError(f"FP8 conversion: the scale of {node.name or node.op_type} is not a constant")
        if scale not in done:
            arr = nh.to_array(inits[scale])  # in float64, so amax = 1 gives float32(1 / 448) exactly, not 1 ulp below
            replace(scale, nh.from_array((arr.astype(np.float64) * SCALE_FROM_INT8).astype(arr.dtype), scale))
            done.add(scale)
        if len(node.input) < 3 or not node.input[2]:  # without a zero point, Q/DQ would mean uint8
            zp = f"{node.output[0]}__fp8_zero_point"
            g.initializer.append(_fp8_tensor(onnx, zp, np.zeros(nh.to_array(inits[scale]).shape, np.float32)))
            inits[zp] = g.initializer[-1]
            node.input[2:] = [zp]
        zp = node.input[2]
        if zp not in done:
            z = nh.to_array(inits[zp])
            if np.any(z.astype(np.float32) != 0):
                raise ConversionError("FP8 conversion: calibration produced non-zero zero points (a symmetric "
                                      "scheme was asked for)")
            replace(zp, _fp8_tensor(onnx, zp, np.zeros(z.shape, np.float32)))
            done.add(zp)
    fp8_weights = _store_weights_in_fp8(onnx, g, inits)
    del g.value_info[:]  # INT8-typed intermediate tensors; ONNX Runtime / TensorRT infer the rest
    qdq = sum(1 for n in g.node if n.op_type in _QDQ)
    return model, {"qdq_nodes": qdq, "fp8_weights": fp8_weights,
                   "activation_quantizers": sum(1 for n in g.node if n.op_type == "QuantizeLinear")}


def _fp8_tensor(onnx, name: str, values: np.ndarray):
    """A FLOAT8E4M3FN initializer of ``values`` (round to nearest even, saturating at +-448)."""
    f8 = require("ml_dtypes", extra="build", purpose="FP8 quantization").float8_e4m3fn
    bits = np.clip(np.asarray(values, np.float32), -FP8_MAX, FP8_MAX).astype(f8).view(np.uint8)
    t = onnx.TensorProto()
    t.name, t.data_type, t.raw_data = name, FLOAT8E4M3FN, bits.tobytes()
    t.dims.extend(int(d) for d in np.shape(values))
    return t


def _store_weights_in_fp8(onnx, g, inits) -> int:
    """QuantizeLinear(FP32 initializer) -> the FP8 initializer it would compute, once, feeding the DequantizeLinear."""
    nh = onnx.numpy_helper
    users: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    for name in _subgraph_reads(g):  # an initializer read inside If / Loop / Scan bodies is never dropped
        users[name] = users.get(name, 0) + 1
    keep, count = [], 0
    for node in g.node:
        w = node.input[0] if node.op_type == "QuantizeLinear" else None
        if w is None or w not in inits or inits[w].data_type == FLOAT8E4M3FN:
            keep.append(node)
            continue
        values = nh.to_array(inits[w]).astype(np.float32)
        scale = nh.to_array(inits[node.input[1]]).astype(np.float32)
        if scale.size > 1:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * values.ndim
            shape[axis] = scale.size
            scale = scale.reshape(shape)
        scaled = np.divide(values, scale, out=np.zeros_like(values), where=scale != 0)  # an all-zero channel
        g.initializer.append(_fp8_tensor(onnx, node.output[0], scaled))
        inits[node.output[0]] = g.initializer[-1]
        users[w] -= 1
        count += 1
    del g.node[:]
    g.node.extend(keep)
    unused = [t for t in g.initializer if t.name in users and users[t.name] <= 0]
    for t in unused:
        g.initializer.remove(t)
    return count


def _subgraph_reads(g) -> set[str]:
    """Tensor names read by nodes inside the subgraphs of ``g``'s nodes (outer-scope references included)."""
    names: set[str] = set()
    for node in g.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                names.update(i for n in sub.node for i in n.input if i)
                names |= _subgraph_reads(sub)
    return names
