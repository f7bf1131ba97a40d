"""Step 7, TensorRT: record the engine build plan; build the engine when TensorRT and a GPU are here.

The plan (optimization profiles from the batch policy and ``--shapes``, workspace, flags per TensorRT
major, DLA, builder level) is always recorded in the manifest: it is how the target compiles the engine on
first load. The engine itself (``converters/tensorrt_engine.py``) is built only where ``tensorrt`` imports
and a CUDA GPU is visible; elsewhere this step is SKIPPED with the reason, and nothing already made is lost.
"""

from __future__ import annotations

import logging
from typing import Any

from .pipeline import Skip

log = logging.getLogger(__name__)


def tensorrt_step(ctx) -> tuple[str, dict[str, Any]]:
    prof = ctx.profile
    if prof.kind == "cpu" or "tensorrt" not in prof.backends or not prof.tensorrt.versions:
        raise Skip(f"profile {prof.name} does not use TensorRT")
    from . import tensorrt_engine as trt

    opts = ctx.options
    graph = opts.precision if ctx.model_onnx is not None and opts.precision in ("fp16", "bf16", "int8", "fp8") else "fp32"
    plan = trt.make_build_plan(profile=prof, precision=opts.precision, inputs=ctx.inputs,
                               max_batch_size=opts.max_batch_size if ctx.batched else 0, shapes=opts.shapes,
                               preferred_batch_sizes=opts.batch.preferred_batch_sizes, graph=graph)
    ctx.engine_plan = plan
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
