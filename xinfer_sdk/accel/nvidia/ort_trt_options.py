"""ONNX Runtime's TensorRT execution provider options from the bundle's engine plan.

The same plan drives the native builder (``engine_plan`` / ``converters/tensorrt_engine.py``) and ORT's
``TensorrtExecutionProvider``: optimization profiles, workspace, builder level, precision flags for the
TensorRT major ORT links (10 when unknown), DLA for static plans, hardware compatibility. Re-exported by
``xinfer_sdk.accel.nvidia.engine_plan``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import UserError
from .._ort import installed_ort_version, version_tuple


def _plan_helpers():
    from . import engine_plan  # imported here: engine_plan re-exports this module at its end

    return engine_plan._shape_text, engine_plan.settings_for


def _ort_shapes(ranges: Mapping[str, Mapping[str, Sequence[int]]], which: str) -> str:
    shape_text, _ = _plan_helpers()
    parts = []
    for name, rng in ranges.items():
        if any(c in name for c in ",:"):
            raise UserError(f"input name {name!r} contains ',' or ':' which ONNX Runtime's TensorRT profile "
                            "options cannot express")
        parts.append(f"{name}:{shape_text(rng[which])}")
    return ",".join(parts)


# ONNX Runtime added ``trt_bf16_enable`` to its TensorRT EP after 1.22.0 (2025-05-09): microsoft/onnxruntime
# PR #24743 (requested in issue #24765), with the compute-capability check of PR #24915 (merged 2025-05-31).
# Older releases reject unknown TensorRT EP options, which makes ORT drop the whole provider.
ORT_TRT_BF16_SINCE = (1, 23)


def ort_trt_provider_options(plan: Mapping[str, Any], cache_dir: str, *, device_id: int = 0,
                             trt_major: int | None = None, ort_version: str | None = None) -> dict[str, str]:
    """Options for ``("TensorrtExecutionProvider", options)`` in ONNX Runtime, from the bundle's plan.

    ``trt_major`` is the TensorRT major ONNX Runtime links against (10 when unknown and the plan lists it):
    with 10 the precision flags are set; with 11 the graph's own types decide (the FP16/BF16 graph, Q/DQ
    nodes), so the flags are "False" there. INT8 comes from the graph's Q/DQ nodes, so no calibration table
    is ever passed. ``trt_bf16_enable`` is passed only when ``ort_version`` (default: the imported
    onnxruntime's) is 1.23 or newer, since older releases refuse the key. DLA options only for a static plan
    (``plan["dla"]["enabled"]`` is set only then). Values are strings, as ONNX Runtime takes them.
    """
    _, settings_for = _plan_helpers()
    per_major = plan.get("per_major") or {}
    if trt_major is None:
        trt_major = 10 if ("10" in per_major or not per_major) else min(int(k) for k in per_major)
    flags = settings_for(plan, trt_major)
    set_flags = set(flags["set_flags"]) if flags.get("supported") else set()
    opts = {
        "device_id": str(int(device_id)),
        "trt_fp16_enable": str("FP16" in set_flags),
        "trt_int8_enable": str("INT8" in set_flags),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache_dir),
        "trt_builder_optimization_level": str(int(plan.get("builder_optimization_level", 3))),
    }
    ort_v = version_tuple(ort_version if ort_version is not None else installed_ort_version())
    if "BF16" in set_flags and ort_v is not None and ort_v >= ORT_TRT_BF16_SINCE:
        opts["trt_bf16_enable"] = "True"
    if plan.get("workspace_bytes"):
        opts["trt_max_workspace_size"] = str(int(plan["workspace_bytes"]))
    ranges = (plan.get("profiles") or [{}])[0]
    if ranges:
        for which in ("min", "opt", "max"):
            opts[f"trt_profile_{which}_shapes"] = _ort_shapes(ranges, which)
    dla = plan.get("dla") or {}
    if dla.get("enabled"):
        opts["trt_dla_enable"] = "True"
        opts["trt_dla_core"] = str(int(dla.get("core", 0)))
    if plan.get("hardware_compatibility") == "ampere+":
        opts["trt_engine_hw_compatible"] = "True"
    return opts


def ort_precision_gap(plan: Mapping[str, Any], *, ort_version: str | None, trt_major: int = 10) -> str | None:
    """Why ONNX Runtime's TensorRT EP would NOT run this plan in its precision (None when it would): a BF16
    plan on TensorRT 10 needs ``trt_bf16_enable``, which ONNX Runtime before 1.23 does not have."""
    _, settings_for = _plan_helpers()
    flags = settings_for(plan, trt_major)
    if "BF16" in (flags.get("set_flags") or []):
        v = version_tuple(ort_version)
        if v is None or v < ORT_TRT_BF16_SINCE:
            return (f"onnxruntime {ort_version or '(unknown)'} has no trt_bf16_enable (added in 1.23): its "
                    "TensorRT EP builds this bf16 bundle without BF16 kernels; upgrade onnxruntime-gpu or use the "
                    "tensorrt backend")
    return None
