"""Step 7, TensorRT: record the engine build plan; build the engine when TensorRT and a GPU are here.

The plan (optimization profiles from the batch policy and ``--shapes``, workspace, flags per TensorRT
major, DLA, builder level) is always recorded in the manifest: it is how the target compiles the engine on
first load. The engine itself (``converters/tensorrt_engine.py``) is built only where ``tensorrt`` imports
and a CUDA GPU is visible; elsewhere this step is SKIPPED with the reason, and nothing already made is lost.
"""

from __future__ import annotations

import logging
from typing import Any

from xinfer_sdk.shapes import IMAGE_SIDE, ShapeRange, image_axes

from .pipeline import Skip
from .synthetic import AUDIO_CHUNK, audio_inputs

log = logging.getLogger(__name__)


def default_ranges(ctx) -> tuple[dict[str, ShapeRange], list[str]]:
    """``--shapes`` plus ranges for the inputs it leaves unsized where the input says what it is: an image's
    dynamic sides 32..224..1280, an audio model's 512-sample chunks, a state batched on another axis (only its
    batch axis is dynamic). Returns (ranges, a note per defaulted input)."""
    opts = ctx.options
    shapes, notes = dict(opts.shapes), []
    if not ctx.batched:
        return shapes, notes
    top = max(1, opts.max_batch_size)
    audio, _ = audio_inputs(ctx.inputs, batched=True)
    for spec in ctx.inputs:
        if spec.name in shapes or all(d >= 0 for d in spec.shape):
            continue
        axes, axis = image_axes(spec, batched=True), spec.batch_axis
        if axes:
            dims = [[1, min(8, top), top] if i == axis else
                    (list(IMAGE_SIDE) if i in axes else [d] * 3) for i, d in enumerate(spec.shape)]
            what = f"{spec.name} sides {IMAGE_SIDE[0]}..{IMAGE_SIDE[1]}..{IMAGE_SIDE[2]}"
        elif spec.name == audio:
            samples = _data_length(ctx, spec.name) or AUDIO_CHUNK
            dims = [[1, min(8, top), top], [samples] * 3]
            what = f"{spec.name} {samples}-sample chunks"
        elif axis and all(d >= 0 for i, d in enumerate(spec.shape) if i != axis):
            dims = [[1, min(8, top), top] if i == axis else [d] * 3 for i, d in enumerate(spec.shape)]
            what = f"{spec.name} batched on axis {axis}"
        else:
            continue
        shapes[spec.name] = ShapeRange(*(tuple(d[k] for d in dims) for k in range(3)))
        notes.append(f"{what}: {shapes[spec.name].text()}")
    return shapes, notes


def _data_length(ctx, name: str) -> int | None:
    """The last dim of ``name`` in the calibration / evaluation data, when they give it."""
    for data in (ctx.calib_data, ctx.eval_data):
        for chunk in getattr(data, "chunks", None) or ():
            if name in chunk:
                return int(chunk[name].shape[-1])
    return None


def tensorrt_step(ctx) -> tuple[str, dict[str, Any]]:
    prof = ctx.profile
    if prof.kind == "cpu" or "tensorrt" not in prof.backends or not prof.tensorrt.versions:
        raise Skip(f"profile {prof.name} does not use TensorRT")
    from . import tensorrt_engine as trt

    opts = ctx.options
    graph = opts.precision if ctx.model_onnx is not None and opts.precision in ("fp16", "bf16", "int8", "fp8") else "fp32"
    shapes, defaulted = default_ranges(ctx)
    plan = trt.make_build_plan(profile=prof, precision=opts.precision, inputs=ctx.inputs,
                               max_batch_size=opts.max_batch_size if ctx.batched else 0, shapes=shapes,
                               preferred_batch_sizes=opts.batch.preferred_batch_sizes, graph=graph)
    ctx.engine_plan = plan
    if defaulted:
        plan["default_shapes"] = defaulted
        ctx.warnings.append(f"TensorRT optimization profile: {'; '.join(defaulted)} (no --shapes for them; give "
                            "--shapes for the sizes you will serve)")
    if not opts.build_engine:
        raise Skip("engine build not requested (--no-engine); the plan is recorded and the runtime compiles the "
                   "engine on the target")
    why = trt.unavailable_reason()
    if why is not None:
        raise Skip(f"no engine built here: {why}; the plan is recorded and the runtime compiles the engine on the "
                   "target at first load")
    model = ctx.model_onnx or ctx.fp32_onnx
    built = trt.build_engine(model, plan, ctx.staging / "engines", log=lambda msg: log.info("tensorrt | %s", msg))
    meta = {k: built.get(k) for k in ("key", "tensorrt_version", "compute_capability", "precision", "plan_hash",
                                      "seconds", "layer_precisions")}
    ctx.engines.append({"path": built["path"], "role": "engine", "meta": meta})
    if built.get("timing_cache"):
        ctx.engines.append({"path": built["timing_cache"], "role": "timing_cache",
                            "meta": {"tensorrt_version": built.get("tensorrt_version"),
                                     "compute_capability": built.get("compute_capability")}})
    ctx.tools["tensorrt"] = str(built.get("tensorrt_version"))
    layers = built.get("layer_precisions") or {}
    return (f"built {built['key']} in {built.get('seconds', 0):.1f} s (TensorRT {built.get('tensorrt_version')}, "
            f"sm {built.get('compute_capability')}); layer precisions {layers.get('verdict', '?')}: "
            f"{layers.get('reason', '')}", {"engine": built["key"], "layer_precisions": layers.get("verdict")})
