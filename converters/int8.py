"""Step 4b, INT8: explicit quantization (QuantizeLinear / DequantizeLinear pairs) by calibration.

ONNX Runtime's ``quantize_static`` writes a QDQ graph; the scheme comes from the profile's
``quantization`` section:

- GPU and Jetson profiles: **symmetric** INT8 activations and weights, every zero point 0, bias left in
  FP32: what TensorRT's explicit quantization accepts (TensorRT 11 takes INT8 only this way);
- the ``cpu`` profile: UINT8 activations (asymmetric) with INT8 weights, the u8s8 VNNI/AMX fast path of
  ONNX Runtime's CPU kernels.

Calibration reads ``--calib`` (see calibration.py): ``calib_samples`` samples, methods minmax / entropy /
percentile, per-channel weights; when no ``--eval`` is given a fraction of ``--calib`` is held out for the
accuracy gate and never used to calibrate. What was used is recorded as provenance in the manifest.

The gate runs the QDQ graph's own INT8 arithmetic (``EXACT_ARITHMETIC``), not the build host's INT8 kernels,
so a bundle's figures do not depend on the CPU that built it; for the ``cpu`` profile it also runs the host's
kernels and warns when they would fail (``host_kernels_warning``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from xinfer_sdk._lazy import require
from xinfer_sdk.errors import CalibrationError, ConversionError

from . import calibration, graph
from .pipeline import Skip

log = logging.getLogger(__name__)

CALIB_BATCH = 16
EVAL_LIMIT = 2048
# ONNX Runtime fuses DequantizeLinear -> Gemm/MatMul/Conv -> QuantizeLinear into its INT8 kernels (QGemm,
# QLinearConv, ...). On x86 without AVX-512 VNNI, AVX-VNNI or AMX-INT8 these multiply u8 x s8 pairs with VPMADDUBSW,
# whose 16-bit pair sums saturate (255 x 127 x 2 > 32767); s8 activations (the symmetric TensorRT scheme) are first
# shifted to u8 by +128 (QDQS8ToU8Transformer), so nearly every pair is at risk. What those kernels compute thus
# depends on the CPU running them (digits MLP, t4 scheme, on an AVX2-only host: logits cosine 0.982 vs 0.99996 for
# the graph's arithmetic). With the fusion off, ONNX Runtime runs Q/DQ as written: INT8 products summed without
# overflow, as TensorRT (int32 accumulation) and VNNI/AMX CPUs compute them. ONNX Runtime's session config key:
# include/onnxruntime/core/session/onnxruntime_session_options_config_keys.h, kOrtSessionOptionsDisableQuantQDQ.
EXACT_ARITHMETIC = {"session.disable_quant_qdq": "1"}
CALIB_HINT = ("pass --calib DATA: an .npz of arrays by input name, a folder of .npy files, or module:function "
              "yielding dicts of arrays")


def scheme(profile) -> dict[str, Any]:
    """The quantization scheme of a profile, as recorded in the manifest."""
    q = profile.quantization
    symmetric = q.scheme == "symmetric" or profile.kind in ("gpu", "jetson")
    act = "int8" if symmetric else q.activation_type
    return {"scheme": "symmetric" if symmetric else "asymmetric", "activation_type": act,
            "weight_type": "int8" if symmetric else q.weight_type, "reduce_range": bool(q.reduce_range),
            "quantize_bias": not symmetric, "format": "QDQ"}


def prepare_data(ctx, *, what: str = "INT8") -> None:
    """Load --calib (and --eval); hold out part of --calib for the gate when there is no --eval."""
    opts = ctx.options
    if opts.calib is None:
        raise CalibrationError(f"{what} needs calibration data and none was given; {CALIB_HINT}")
    held_out = opts.eval is None
    limit = math.ceil(opts.calib_samples / (1 - opts.eval_fraction)) if held_out else opts.calib_samples
    data = calibration.load(opts.calib, ctx.inputs, batched=ctx.batched, what="--calib", limit=limit)
    if held_out:
        n = data.count
        if n < 2:
            raise CalibrationError(f"--calib has {n} sample; give at least 2 (one is held out for the accuracy "
                                   "gate) or pass --eval DATA")
        k = max(1, round(n * opts.eval_fraction))
        data, ctx.eval_data = data.split(k)
        ctx.eval_data.source = {**ctx.eval_data.source, "held_out_of": "--calib", "samples": k}
    else:
        ctx.eval_data = calibration.load(opts.eval, ctx.inputs, batched=ctx.batched, what="--eval", limit=EVAL_LIMIT)
    ctx.calib_data = data.take(opts.calib_samples)


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over a Dataset, with progress and ranges (strides)."""

    def __init__(self, data: calibration.Dataset, batch: int, progress):
        self.feeds = list(data.batches(batch))
        self.total = data.count
        self.progress = progress
        self.start, self.stop = 0, len(self.feeds)
        self.pos = 0
        self.done = 0

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.stop, self.pos = start_index, min(end_index, len(self.feeds)), start_index

    def get_next(self):
        if self.pos >= self.stop:
            return None
        feed = self.feeds[self.pos]
        self.pos += 1
        self.done += int(next(iter(feed.values())).shape[0]) if feed else 0
        self.progress(min(self.done, self.total), self.total, "calibrating")
        return feed

    def rewind(self) -> None:
        self.pos = self.start


class _MuteRootWarnings(logging.Filter):
    """onnxruntime.quantization warns through the root logger (per-channel fallbacks, pre-processing advice);
    keep those out of the user's terminal, count them, and log the first one at INFO."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.first = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "root" and record.levelno <= logging.WARNING:
            self.count += 1
            self.first = self.first or record.getMessage()
            return False
        return True

    def __enter__(self):
        logging.getLogger().addFilter(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeFilter(self)


def _large(path) -> bool:
    """Past protobuf's 2 GB the quantized graph must keep its weights in '<name>.data' (graph.save's layout)."""
    return sum(p.stat().st_size for p in graph.files_of(path)) > graph.EXTERNAL_DATA_BYTES


def _per_channel_opset(ctx, path, per_channel: bool):
    """Per-channel scales need DequantizeLinear's ``axis`` (opset 13): an older graph (Paddle2ONNX's opset 12) is
    converted to opset 13 first; if that fails, weights are quantized per tensor, with a warning."""
    model = graph.load(path)
    if not per_channel or graph.opset(model) >= 13:
        return path, per_channel
    onnx = graph.onnx()
    try:
        from onnx import version_converter

        upgraded = version_converter.convert_version(model, 13)
        onnx.checker.check_model(upgraded)
    except Exception as exc:
        ctx.warnings.append(f"INT8: weights quantized per tensor: the graph is opset {graph.opset(model)}, per-channel "
                            f"scales need opset 13, and converting it failed ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})")
        return path, False
    out = ctx.scratch / "int8-opset13.onnx"
    graph.save(upgraded, out)
    ctx.warnings.append(f"INT8: the graph was converted from opset {graph.opset(model)} to 13 for per-channel weight "
                        "scales (DequantizeLinear's axis)")
    return out, True


def int8_step(ctx) -> tuple[str, dict[str, Any]]:
    if ctx.precision != "int8":
        raise Skip(f"precision is {ctx.precision}")
    q = require("onnxruntime.quantization", extra="build", purpose="INT8 quantization")
    prepare_data(ctx)
    sch = scheme(ctx.profile)
    opts = ctx.options
    pre = ctx.scratch / "int8-pre.onnx"
    try:
        q.quant_pre_process(str(ctx.fp32_onnx), str(pre), skip_symbolic_shape=shaped(ctx.fp32_onnx),
                            auto_merge=True)
    except Exception as exc:  # pre-processing only helps; quantize the cleaned graph without it
        log.warning("int8                                | pre-processing failed (%s); quantizing without it", exc)
        pre = ctx.fp32_onnx
    pre, per_channel = _per_channel_opset(ctx, pre, opts.per_channel)
    types = {"int8": q.QuantType.QInt8, "uint8": q.QuantType.QUInt8}
    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    symmetric = sch["scheme"] == "symmetric"
    batch = CALIB_BATCH if ctx.batched else 1
    reader = _Reader(ctx.calib_data, batch, ctx.progress)
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": sch["quantize_bias"],
             "CalibTensorRangeSymmetric": symmetric,
             # one batch per collect call: ranges / histograms are merged batch by batch, so memory stays bounded
             # and batches may differ in size or sequence length (histograms need equal shapes within a call)
             "CalibStridedMinMax": 1}
    out = ctx.scratch / "int8.onnx"
    muted = _MuteRootWarnings()
    try:
        with muted:
            q.quantize_static(str(pre), str(out), reader, quant_format=q.QuantFormat.QDQ,
                              per_channel=per_channel, reduce_range=sch["reduce_range"],
                              activation_type=types[sch["activation_type"]], weight_type=types[sch["weight_type"]],
                              calibrate_method=methods[opts.calib_method], extra_options=extra,
                              use_external_data_format=_large(ctx.fp32_onnx))
    except Exception as exc:
        raise ConversionError(f"INT8 quantization failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if muted.count:
        log.info("int8                                | onnxruntime.quantization warned %d time(s), e.g.: %s",
                 muted.count, muted.first)
    model = graph.load(out)
    zps = zero_points(model)
    if symmetric and any(int(np.abs(z).max(initial=0)) for z in zps.values()):
        raise ConversionError("INT8 quantization produced non-zero zero points for a symmetric scheme "
                              "(TensorRT would reject the graph)")
    ctx.model_onnx = out
    qdq = sum(1 for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))
    if qdq == 0:
        flow = sorted({n.op_type for n in model.graph.node} & {"If", "Loop", "Scan"})
        inside = (f": the model computes inside {'/'.join(flow)} subgraphs, which ONNX Runtime's quantizer does not "
                  "enter") if flow else ""
        ctx.warnings.append(f"INT8: no tensor was quantized{inside}; the bundle computes in FP32 (an fp32 build "
                            "gives the same model without calibration)")
    ctx.calibration = {
        **sch, "method": opts.calib_method, "per_channel": per_channel, "samples": ctx.calib_data.count,
        "batch": batch, "source": ctx.calib_data.source, "data_sha256": ctx.calib_data.fingerprint(),
        "held_out_for_gate": ctx.eval_data.count if opts.eval is None else 0, "qdq_nodes": qdq,
        "zero_points": "all 0" if symmetric else "asymmetric activations",
        "tool": "onnxruntime.quantization.quantize_static",
    }
    ctx.progress(ctx.calib_data.count, ctx.calib_data.count, "calibrated")
    return (f"{sch['scheme']} {sch['activation_type']}/{sch['weight_type']}, {opts.calib_method}, "
            f"{ctx.calib_data.count} samples, {qdq} Q/DQ nodes",
            {"samples": ctx.calib_data.count, "qdq_nodes": qdq})


def host_kernels_warning(profile_name: str, failures: list[str]) -> str:
    """The build warning when this CPU's INT8 kernels fail the gate that the graph's own arithmetic passed."""
    return (f"ONNX Runtime's INT8 kernels on this build host would fail the {profile_name} gate ({'; '.join(failures)}), "
            "although the graph's INT8 arithmetic passes it (on x86 without AVX-512 VNNI, AVX-VNNI or AMX-INT8 their "
            "u8 x s8 products saturate in 16 bits). The bundle is right for CPUs with those; to serve on CPUs like this one, "
            "rebuild with --set quantization.reduce_range=true (7-bit weights, no saturation)")


def zero_points(model) -> dict[str, np.ndarray]:
    """Zero-point initializers of every QuantizeLinear / DequantizeLinear node, by tensor name."""
    numpy_helper = graph.onnx().numpy_helper
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            t = inits.get(node.input[2])
            if t is not None:
                out[t.name] = numpy_helper.to_array(t)
    return out


def shaped(path) -> bool:
    """The clean-up step already ran ONNX Runtime's symbolic shape inference on this graph (its result is in the
    graph's value_info): the pre-processing skips its own, which costs tens of seconds on Resize-heavy graphs."""
    from .cleanup import shapes_complete

    try:
        return shapes_complete(graph.load(path, what="ONNX model"))
    except Exception:  # noqa: BLE001 - only an optimisation: run the inference
        return False
