"""Step 6, the memory budget: will the model fit the target before anything is compiled for it?

weights + peak activations at ``max_batch_size`` (the largest ``--shapes`` for other axes) + the TensorRT
workspace, at the build's precision, against the profile's usable memory ((total - reserve) x usable
fraction; on Jetson that memory is shared with the CPU; for the ``cpu`` profile it is this host's RAM).
Sizes come from ``xinfer_sdk.graph`` on the cleaned FP32 graph, scaled to the target precision. A
build that cannot fit is refused with the numbers and what would fit (a smaller max batch, INT8).
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import numpy as np

from xinfer_sdk.errors import MemoryBudgetError, UserError
from xinfer_sdk.shapes import IMAGE_SIDE, ShapeRange, image_axes, shapes_hint

from .pipeline import Skip
from .synthetic import AUDIO_CHUNK, audio_inputs

log = logging.getLogger(__name__)

GB = 1e9
# bytes per FP32 byte once converted: INT8 weights are 1 byte; INT8 graphs keep some activations in FP16/FP32;
# FP8 weights are 1 byte, and an FP8 graph is FP32 between its Q/DQ pairs (built strongly typed, converters/fp8.py)
WEIGHT_SCALE = {"fp32": 1.0, "fp16": 0.5, "bf16": 0.5, "int8": 0.25, "fp8": 0.25}
ACTIVATION_SCALE = {"fp32": 1.0, "fp16": 0.5, "bf16": 0.5, "int8": 0.5, "fp8": 1.0}


def usable_gb(profile) -> tuple[float | None, str]:
    """Usable memory of the target and where the figure comes from."""
    usable = profile.usable_memory_gb()
    if usable is not None:
        where = "unified memory shared with the CPU" if profile.unified_memory and profile.kind == "jetson" else \
            "GPU memory"
        return usable, f"({profile.memory_gb:g} GB - {profile.memory.reserve_gb:g} GB reserve) x " \
                       f"{profile.memory.usable_fraction:g}, {where}"
    from xinfer_sdk.profiles import read_host

    host = read_host().memory_gb
    if host is None:
        return None, "host memory unknown"
    usable = max(0.0, (host - profile.memory.reserve_gb) * profile.memory.usable_fraction)
    return usable, f"(this host's {host:.1f} GB - {profile.memory.reserve_gb:g} GB reserve) x " \
                   f"{profile.memory.usable_fraction:g}"


def estimate(ctx) -> dict[str, Any]:
    from xinfer_sdk import graph as graphcost

    opts = ctx.options
    batch = opts.max_batch_size if ctx.batched else None
    shapes, guessed = dict(opts.shapes), []
    for spec in ctx.inputs:  # a PyTorch export knows one real size for each dynamic axis: its example's
        if spec.name not in shapes and ctx.example and spec.name in ctx.example:
            shape = tuple(int(d) for d in np.shape(ctx.example[spec.name]))
            if len(shape) == len(spec.shape) and any(d < 0 for d in spec.shape[1 if ctx.batched else 0:]):
                shapes[spec.name] = ShapeRange.fixed(shape)
                guessed.append(spec.name)
    image_sized = []
    for spec in ctx.inputs:  # an image with dynamic sides: sized at the largest default side (1280)
        axes = image_axes(spec, batched=ctx.batched)
        if spec.name not in shapes and axes and all(d >= 0 for i, d in enumerate(spec.shape) if i and i not in axes):
            dims = [1 if i == 0 and ctx.batched else (IMAGE_SIDE[2] if i in axes else d) for i, d in
                    enumerate(spec.shape)]
            shapes[spec.name] = ShapeRange.fixed(tuple(dims))
            image_sized.append(f"{spec.name} at {IMAGE_SIDE[2]}x{IMAGE_SIDE[2]}")
    audio, _ = audio_inputs(ctx.inputs, batched=ctx.batched)
    if audio is not None and audio not in shapes:  # an audio model: sized at its default chunk
        shapes[audio] = ShapeRange.fixed((opts.max_batch_size, AUDIO_CHUNK) if ctx.batched else (AUDIO_CHUNK,))
        image_sized.append(f"{audio} at {AUDIO_CHUNK} samples")
    for spec in ctx.inputs:  # batched on another axis (a recurrent state): every dim is known but the batch
        if ctx.batched and spec.batch_axis and spec.name not in shapes and all(
                d >= 0 for i, d in enumerate(spec.shape) if i != spec.batch_axis):
            shapes[spec.name] = ShapeRange.fixed(tuple(opts.max_batch_size if i == spec.batch_axis else d
                                                       for i, d in enumerate(spec.shape)))
    try:
        cost = graphcost.analyze(ctx.fp32_onnx, batch_size=batch, shapes=shapes, which="max")
    except UserError as exc:
        raise Skip(f"cannot size the graph: {own_hint(str(exc), ctx)}") from None
    prec = opts.precision
    weights = cost.param_bytes * WEIGHT_SCALE[prec]
    acts = cost.activation_bytes * ACTIVATION_SCALE[prec]
    workspace = ctx.profile.memory.workspace_gb * GB if ctx.profile.kind != "cpu" else 0.0
    usable, basis = usable_gb(ctx.profile)
    total = weights + acts + workspace
    return {"precision": prec, "batch": cost.batch_size, "weights_bytes": int(weights),
            "activations_bytes": int(acts), "workspace_bytes": int(workspace), "total_bytes": int(total),
            "usable_bytes": None if usable is None else int(usable * GB), "usable_basis": basis,
            "fits": usable is None or total <= usable * GB, "unknown_nodes": len(cost.unknown),
            "sized_at_example_shape": guessed, "sized_by_default": image_sized}


def budget_step(ctx) -> tuple[str, dict[str, Any]]:
    est = estimate(ctx)
    ctx.budget = est
    note = (f"; {', '.join(est['sized_at_example_shape'])} sized at the export example's shape (give --shapes for the "
            "real maximum)") if est["sized_at_example_shape"] else ""
    if est.get("sized_by_default"):
        note += (f"; {', '.join(est['sized_by_default'])} by default (dynamic sizes nothing gave; --shapes sets the "
                 "real maximum)")
    line = (f"{size(est['total_bytes'])} (weights {size(est['weights_bytes'])} + activations "
            f"{size(est['activations_bytes'])} at batch {est['batch']} + workspace {size(est['workspace_bytes'])}) "
            f"of {size(est['usable_bytes'])} usable{note}")
    if est["fits"]:
        return line, {}
    if est.get("sized_by_default"):  # a guess of the sizes never refuses a build: it says what to give
        ctx.warnings.append(f"memory budget: the model would not fit profile {ctx.profile.name} at sizes chosen by "
                            f"default ({line}); give --shapes with the largest inputs you will serve to check it")
        return f"not checked at real sizes: {line}", {}
    raise MemoryBudgetError(f"the model does not fit profile {ctx.profile.name} at {est['precision']}: {line}",
                            hint=suggest(ctx, est), details={"memory_budget": est})


_GENERIC_HINT = re.compile(r"--shapes (\S+?):MIN\.\.OPT\.\.MAX, e\.g\. \S+")


def own_hint(message: str, ctx) -> str:
    """``message`` with a generic ``--shapes NAME:MIN..OPT..MAX, e.g. input_ids:...`` example replaced by one made
    from the named input's own dims."""
    specs = {s.name: s for s in ctx.inputs}

    def repl(m: re.Match) -> str:
        spec = specs.get(m.group(1))
        return shapes_hint(spec, batched=ctx.batched, max_batch=ctx.options.max_batch_size) if spec else m.group(0)

    return _GENERIC_HINT.sub(repl, message)


def suggest(ctx, est: dict[str, Any]) -> str:
    room = est["usable_bytes"] - est["weights_bytes"] - est["workspace_bytes"]
    ideas = []
    per_sample = est["activations_bytes"] / max(1, est["batch"])
    if room > 0 and per_sample > 0 and ctx.batched:
        fits = math.floor(room / per_sample)
        if fits >= 1:
            ideas.append(f"--max-batch-size {fits}")
    prec = est["precision"]
    if prec not in ("int8", "fp8") and "int8" in ctx.profile.precisions:
        ideas.append("--precision int8 (about a quarter of the FP32 weights)")
    elif prec == "fp32" and "fp16" in ctx.profile.precisions:
        ideas.append("--precision fp16")
    if ctx.profile.kind != "cpu" and est["workspace_bytes"] > 0:
        ideas.append(f"a smaller workspace (--set memory.workspace_gb={est['workspace_bytes'] / GB / 2:g})")
    if not ideas:
        return "the weights alone exceed the usable memory: choose a profile with more memory"
    return "try " + ", or ".join(ideas)


def size(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"
