"""Step 5, the accuracy gate: the converted graph against the FP32 reference, on held-out samples.

Both graphs run on ONNX Runtime's CPU provider on the same inputs (``--eval``; else the part of ``--calib``
held out of calibration; else, for FP16/FP32, ``--calib`` itself; else synthetic inputs, which the report
says). Per output: max absolute error, max error relative to the reference's largest magnitude, mean
absolute error, cosine similarity (all samples, and the worst sample), top-1 agreement (argmax over the
last axis); with labels, the true accuracy of both and the drop. An INT8 graph runs its own arithmetic (ONNX
Runtime's QDQ fusion off), whatever INT8 kernels the build host has; for the ``cpu`` profile the host's kernels
are measured too (``host_kernels``) and a warning says when they fail. Thresholds come from the profile
(``accuracy.<precision>``) with the caller's overrides. Below them: ``AccuracyGateError`` (exit 3), with
the report in the manifest. An FP32 build compares the cleaned graph with the graph as given/exported.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from xinfer_sdk._lazy import require
from xinfer_sdk.errors import AccuracyGateError, ConversionError
from xinfer_sdk.shapes import shapes_hint

from . import calibration
from . import gate_metrics as gm
from . import kinds as output_kinds
from .context import SYNTHETIC_SAMPLES
from .fp8 import ORT_DISABLED_OPTIMIZERS as FP8_ORT_DISABLED
from .int8 import EVAL_LIMIT, EXACT_ARITHMETIC, host_kernels_warning

log = logging.getLogger(__name__)

EVAL_BATCH = 32


def gate_step(ctx) -> tuple[str, dict[str, Any]]:
    opts = ctx.options
    if ctx.model_onnx is None or opts.precision == "fp32":
        reference, candidate, what = ctx.raw_onnx, ctx.fp32_onnx, "cleaned FP32 graph vs the graph as given"
    else:
        reference, candidate, what = ctx.fp32_onnx, ctx.model_onnx, f"{opts.precision} graph vs FP32 reference"
        if opts.precision == "bf16":
            candidate, what = bf16_candidate(ctx)
    # INT8: the graph's own arithmetic, not this CPU's INT8 kernels (they may saturate: see int8.EXACT_ARITHMETIC);
    # FP8: the float8 QuantizeLinear / DequantizeLinear executed as written (converters/fp8.py)
    exact = opts.precision in ("int8", "fp8") and ctx.model_onnx is not None
    if exact:
        what += f" (the graph's {opts.precision.upper()} arithmetic: ONNX Runtime's QDQ fusion off" + (
            ", its Relu/Clip-before-QuantizeLinear rewrites off)" if opts.precision == "fp8" else ")")
    kinds = graph_kinds(reference, ctx.outputs, opts.output_kinds)  # first: a wrong --output-kind name fails fast
    data = eval_data(ctx)
    batch = min(EVAL_BATCH, opts.max_batch_size) if ctx.batched else 1
    try:
        ref = run_graph(reference, data, batch)
    except ConversionError as exc:
        if data.source.get("kind") != "synthetic":
            raise
        hints = "; ".join(shapes_hint(s, batched=ctx.batched, max_batch=opts.max_batch_size) for s in ctx.inputs
                          if any(d < 0 for d in s.shape))
        raise ConversionError(exc.message, hint=f"the gate's synthetic inputs ({data.source.get('what')}) are not "
                              f"sizes this model takes: give its real ones, e.g. {hints or '--shapes'}, or data with "
                              "--eval") from None
    got = run_graph(candidate, data, batch, config=EXACT_ARITHMETIC if exact else None,
                    disabled_optimizers=FP8_ORT_DISABLED if opts.precision == "fp8" else ())
    names, thresholds = [o.name for o in ctx.outputs], dataclasses.asdict(opts.thresholds)
    axes = {o.name: getattr(o, "batch_axis", 0) for o in ctx.outputs} if ctx.batched else {}
    report = compare(ref, got, names, labels=data.label_array(), thresholds=thresholds,
                     labels_output=opts.labels_output, kinds=kinds, axes=axes)
    if exact and ctx.profile.kind == "cpu":  # ONNX Runtime's CPU kernels run this bundle: how do this host's fare?
        host = compare(ref, run_graph(candidate, data, batch), names, labels=data.label_array(), thresholds=thresholds,
                       labels_output=opts.labels_output, kinds=kinds, axes=axes)
        report["host_kernels"] = {"passed": host["passed"], "failures": host["failures"], "outputs": host["outputs"]}
        if report["passed"] and not host["passed"]:
            ctx.warnings.append(host_kernels_warning(ctx.profile.name, host["failures"]))
    report.update(compared=what, precision=opts.precision, samples=data.count, data=data.source.get("what"),
                  data_kind=data.source.get("kind"))
    ctx.accuracy = report
    summary = summarize(report)
    if not report["passed"]:
        raise AccuracyGateError(f"accuracy gate failed for {opts.precision} on profile {ctx.profile.name}: "
                                f"{'; '.join(report['failures'])} ({data.count} samples from {report['data']})",
                                details={"accuracy": report})
    return summary, {"samples": data.count}


def graph_kinds(path, outputs, user) -> dict[str, tuple[str, str]]:
    """{output: (kind, why)} from the reference graph (the weights are not read) and ``--output-kind``."""
    onnx = require("onnx", purpose="the accuracy gate")
    output_kinds.check_names(user or {}, [o.name for o in outputs])
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # the gate then guesses from the shapes
        model = None
    return output_kinds.infer(model, outputs, user)


BF16_EMULATION = ("bf16 graph emulated on ONNX Runtime CPU (which has no BF16 kernels besides Cast): its BF16 "
                  "weights, every BF16 tensor rounded to BF16 between ops, FP32 arithmetic inside them; vs FP32 "
                  "reference")


def bf16_candidate(ctx):
    """The graph the gate runs for bf16: ``bf16.emulate`` of the BF16 graph (see converters/bf16.py)."""
    from . import bf16, graph

    path = ctx.scratch / "bf16-emulated.onnx"
    graph.save(bf16.emulate(graph.load(ctx.model_onnx)), path)
    return path, BF16_EMULATION


def eval_data(ctx) -> calibration.Dataset:
    if ctx.eval_data is not None:
        return ctx.eval_data
    opts = ctx.options
    for spec, what in ((opts.eval, "--eval"), (opts.calib, "--calib")):
        if spec is not None:
            ctx.eval_data = calibration.load(spec, ctx.inputs, batched=ctx.batched, what=what, limit=EVAL_LIMIT)
            return ctx.eval_data
    ctx.eval_data = calibration.synthetic(ctx.inputs, count=SYNTHETIC_SAMPLES, shapes=opts.shapes, batched=ctx.batched,
                                          example=ctx.example)
    ctx.warnings.append("the accuracy gate ran on synthetic random inputs (no --eval / --calib given): it checks the "
                        "conversion, not accuracy on your data")
    return ctx.eval_data


def run_graph(path, data: calibration.Dataset, batch: int, *, config: dict[str, str] | None = None,
              disabled_optimizers: Sequence[str] = ()) -> list[list[np.ndarray]]:
    """Outputs per feed (ONNX Runtime, CPU), in graph output order; ``config``: session config entries;
    ``disabled_optimizers``: ONNX Runtime graph rewrites not to apply."""
    ort = require("onnxruntime", purpose="the accuracy gate")
    options = ort.SessionOptions()
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    try:
        sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(disabled_optimizers) or None)
    except Exception as exc:
        raise ConversionError(f"ONNX Runtime cannot load {path.name} for the accuracy gate: "
                              f"{str(exc).splitlines()[0]}") from None
    results = []
    for feeds in data.batches(batch):
        try:
            results.append(sess.run(None, feeds))
        except Exception as exc:
            shapes = ", ".join(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in feeds.items())
            raise ConversionError(f"{path.name} fails on the evaluation data ({shapes}): {str(exc).splitlines()[0]}",
                                  hint="check that --eval / --calib match the model's inputs") from None
    return results


def _stack(parts: list[list[np.ndarray]], i: int, axis: int | None = 0) -> np.ndarray:
    """Output ``i`` of every batch, samples on axis 0 (an output batched on another axis, a recurrent state
    ``[2, batch, 128]``, is moved there so per-sample metrics are per sample)."""
    arrays = [np.asarray(p[i]) for p in parts]
    if axis and arrays[0].ndim > axis:
        arrays = [np.moveaxis(a, axis, 0) for a in arrays]
    try:
        return np.concatenate(arrays, axis=0) if arrays[0].ndim else np.stack(arrays)
    except ValueError:  # different sequence lengths per batch: compare flattened
        return np.concatenate([a.reshape(-1) for a in arrays])


def compare(ref_parts, got_parts, names: Sequence[str], *, labels: np.ndarray | None, thresholds: dict[str, Any],
            labels_output: str | None = None, kinds: dict[str, tuple[str, str]] | None = None,
            axes: dict[str, int | None] | None = None) -> dict[str, Any]:
    """Metrics per output by its kind (``kinds``: {name: (kind, why)}; else guessed from the shapes) and the failures
    against ``thresholds``. An output bit-identical to the reference never fails."""
    outputs: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    axes = axes or {}
    stacked = [(_stack(ref_parts, i, axes.get(n, 0)), _stack(got_parts, i, axes.get(n, 0))) for i, n in enumerate(names)]
    kinds = dict(kinds or {})
    for name, (ref, _) in zip(names, stacked):
        kinds.setdefault(name, output_kinds.from_shape(tuple(ref.shape)))
    primary = labels_output or next((n for n in names if kinds[n][0] in ("class", "sequence")), None)
    for name, (ref, got) in zip(names, stacked):
        kind, why = kinds[name]
        m = _metrics(ref, got, kind, gated=name == primary or why.startswith("given"))
        m.update(kind=kind, why=why)
        outputs[name] = m
        if m.get("bit_exact"):
            continue
        failures += _failures(name, m, thresholds)
    acc = None
    if labels is not None and primary is not None:
        i = list(names).index(primary)
        acc = _true_accuracy(stacked[i][0], stacked[i][1], labels)
        if acc is not None:
            acc["output"] = primary
            if acc["drop"] > thresholds["max_accuracy_drop"]:
                failures.append(f"accuracy {acc['converted']:.4f} vs FP32 {acc['reference']:.4f}: drop "
                                f"{acc['drop']:.4f} > {thresholds['max_accuracy_drop']}")
    return {"passed": not failures, "failures": failures, "thresholds": thresholds, "primary_output": primary,
            "outputs": outputs, "labels": labels is not None, "true_accuracy": acc}


def _failures(name: str, m: dict[str, Any], thresholds: dict[str, Any]) -> list[str]:
    failures = []
    if m.get("nonfinite"):
        failures.append(f"{name}: {m['nonfinite']} non-finite values where the reference is finite")
    cosine = m.get("min_sample_cosine", m.get("cosine")) if m["kind"] == "embedding" else m.get("cosine")
    if cosine is not None and cosine < thresholds["min_cosine"]:
        label = "lowest per-sample cosine" if m["kind"] == "embedding" and "min_sample_cosine" in m else "cosine"
        failures.append(f"{name}: {label} {cosine:.5f} < {thresholds['min_cosine']}")
    limit = thresholds.get("max_abs_error")
    if limit is not None and m.get("max_abs_error", 0.0) > limit:
        failures.append(f"{name}: max abs error {m['max_abs_error']:.4g} > {limit}")
    agree = m.get("top1_agreement", m.get("exact_match"))
    if m.get("top1_gated") and agree is not None and agree < thresholds["min_top1_agreement"]:
        what = "top-1 agreement per step" if m["kind"] == "sequence" else "top-1 agreement"
        failures.append(f"{name}: {what} {agree:.4f} < {thresholds['min_top1_agreement']}")
    iou_min = thresholds.get("min_mask_iou") or gm.MIN_MASK_IOU
    if "mask_iou" in m and m["mask_iou"] < iou_min:
        failures.append(f"{name}: IoU of the mask thresholded at {m['mask_threshold']:g} is {m['mask_iou']:.4f} "
                        f"< {iou_min}")
    match_min = thresholds.get("min_box_match") or gm.MIN_BOX_MATCH
    if "box_match" in m and m["box_match"] < match_min:
        failures.append(f"{name}: boxes matched {m['box_match']:.4f} < {match_min} ({m['boxes_missed']} missed, "
                        f"{m['boxes_extra']} extra)")
    return failures


def _metrics(ref: np.ndarray, got: np.ndarray, kind: str = "raw", gated: bool = False) -> dict[str, Any]:
    if ref.shape != got.shape:
        return {"shape_mismatch": [list(ref.shape), list(got.shape)], "cosine": 0.0, "metric": "shapes differ"}
    if ref.dtype.kind not in "fc":
        return {"exact_match": float(np.mean(ref == got)) if ref.size else 1.0, "top1_gated": gated,
                "metric": "exact match (not floats)" + ("" if gated else ", reported, not gated")}
    r, g = ref.astype(np.float64), got.astype(np.float64)
    finite = np.isfinite(r)
    bad = int(np.sum(finite & ~np.isfinite(g)))
    r, g = np.where(finite, r, 0.0), np.where(np.isfinite(g), g, 0.0)
    diff = np.abs(r - g)
    scale = float(np.abs(r).max()) if r.size else 0.0
    out: dict[str, Any] = {
        "max_abs_error": float(diff.max()) if diff.size else 0.0,
        "mean_abs_error": float(diff.mean()) if diff.size else 0.0,
        "max_rel_error": float(diff.max() / scale) if scale > 0 else 0.0,
        "cosine": _cosine(r.reshape(-1), g.reshape(-1)),
    }
    if np.array_equal(ref, got, equal_nan=True):
        out["bit_exact"] = True
    if r.ndim >= 1 and r.shape[0] > 1:
        out["min_sample_cosine"] = gm.sample_cosine(r, g)
    metric = "cosine"
    if kind in ("class", "sequence") and r.ndim >= 2 and r.shape[-1] >= 2:
        out.update(gm.top1(r, g), top1_gated=gated)
        metric = ("top-1 per step" if kind == "sequence" else "top-1 over the class axis") + \
            (" (ties agree), cosine" if gated else " (reported, not gated: not the primary output), cosine")
    elif kind == "map":
        out.update(gm.mask_iou(r, g))
        metric = f"cosine, max error, IoU of the mask thresholded at {out['mask_threshold']:g}"
    elif kind == "boxes":
        axis = output_kinds._boxes_layout(tuple(r.shape))
        if axis is not None:
            out.update(gm.boxes_match(r, g, axis))
            metric = f"boxes decoded (score >= {gm.BOX_CONF}) and matched (IoU >= {gm.BOX_IOU}), cosine"
        else:
            metric = "cosine (the shape is not a [N, 4+C, anchors] head: boxes not decoded)"
    elif kind == "embedding":
        metric = "cosine per sample"
    if bad:
        out["nonfinite"] = bad
    out["metric"] = "bit-exact (passes whatever the metric)" if out.get("bit_exact") else metric
    return out


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _true_accuracy(ref: np.ndarray, got: np.ndarray, labels: np.ndarray) -> dict[str, float] | None:
    labels = np.asarray(labels)
    if ref.ndim < 2 or ref.shape[:-1] != labels.shape:
        log.warning("accuracy                            | labels of shape %s do not match output %s; true "
                    "accuracy not computed", labels.shape, ref.shape)
        return None
    a_ref = float(np.mean(ref.argmax(-1) == labels))
    a_got = float(np.mean(got.argmax(-1) == labels))
    return {"reference": a_ref, "converted": a_got, "drop": a_ref - a_got}


def summarize(report: dict[str, Any]) -> str:
    parts = []
    for name, m in report["outputs"].items():
        bits = [m["kind"]] if "kind" in m else []
        if m.get("bit_exact"):
            bits.append("bit-exact")
        bits += [f"cos {m['cosine']:.5f}"] if "cosine" in m else []
        if "top1_agreement" in m:
            bits.append(f"top-1 {m['top1_agreement']:.3f}")
        if "max_abs_error" in m:
            bits.append(f"max abs {m['max_abs_error']:.3g}")
        if "mask_iou" in m:
            bits.append(f"mask IoU {m['mask_iou']:.4f}")
        if "box_match" in m:
            bits.append(f"boxes matched {m['box_match']:.3f}")
        if "exact_match" in m:
            bits.append(f"match {m['exact_match']:.3f}")
        parts.append(f"{name}: {', '.join(bits)}")
    acc = report.get("true_accuracy")
    if acc:
        parts.append(f"accuracy {acc['converted']:.4f} vs FP32 {acc['reference']:.4f}")
    return "; ".join(parts)
