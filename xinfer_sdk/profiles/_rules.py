"""Rules on a merged profile that a field-by-field check cannot express: figures present and sourced, the
vendor's compute-capability form, prices consistent with their instance; and the architecture family.

Every failure is a ``ProfileError`` naming the file and the field path, in one line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import ProfileError
from ._checker import UNKNOWN, checkpoint, report

# Figures a GPU/Jetson profile must state (null allowed where the vendor publishes nothing) with sources.
FIGURES = ("compute_capability", "memory_gb", "memory_bandwidth_gbps", "peak_tflops", "tdp_w", "dla_cores")


_FAMILY_BY_CC = {"7.0": "volta", "7.2": "volta-xavier", "7.5": "turing", "8.0": "ampere-dc", "8.6": "ampere",
                 "8.7": "ampere", "8.9": "ada", "9.0": "hopper", "11.0": "blackwell-thor"}
_FAMILY_BY_GFX = {"gfx90a": "cdna2", "gfx940": "cdna3", "gfx941": "cdna3", "gfx942": "cdna3", "gfx950": "cdna4"}


def arch_family_of(compute_capability: str | None, *, kind: str = "gpu") -> str:
    """7.5 turing, 8.0 ampere-dc, 8.6/8.7 ampere, 8.9 ada, 9.0 hopper, 10.x/12.x blackwell, 11.0 blackwell-thor,
    7.2 volta-xavier, gfx942 cdna3, gfx950 cdna4; 'cpu' for kind cpu; 'unknown' otherwise."""
    if kind == "cpu":
        return "cpu"
    cc = (compute_capability or "").strip().lower()
    if cc in _FAMILY_BY_CC:
        return _FAMILY_BY_CC[cc]
    if cc in _FAMILY_BY_GFX:
        return _FAMILY_BY_GFX[cc]
    if cc.split(".")[0] in ("10", "12"):
        return "blackwell"
    return "unknown"



def check_complete(data: Mapping[str, Any], file: str) -> None:
    """Rules on the merged (inherited) profile: figures present, sources kept, policy consistent."""
    for key in ("kind", "precisions", "default_precision", "backends"):
        if key not in data:
            report(ProfileError("missing required field (set it here or in the profile this one extends)",
                                file=file, field=key))
    checkpoint()  # the rules below read these fields
    kind = data["kind"]
    if kind in ("gpu", "jetson"):
        for fig in FIGURES:
            if fig not in data:
                report(ProfileError("missing figure (use null only where the vendor publishes none, and say so "
                                    "in notes)", file=file, field=fig))
        for fig in ("compute_capability", "memory_gb", "memory_bandwidth_gbps"):
            if data.get(fig) is None:
                report(ProfileError("this figure cannot be null for a GPU or Jetson profile", file=file, field=fig))
        sources = data.get("sources") or {}
        for fig in FIGURES:
            if data.get(fig) not in (None, 0, UNKNOWN) and fig not in sources and fig != "dla_cores":
                report(ProfileError(f"figure has no source URL; add sources.{fig}", file=file, field=f"sources.{fig}"))
    _check_vendor(data, file)
    sources = data.get("sources") or {}
    for fig in ("l2_cache_mb", "host_link_gbps"):
        if data.get(fig) not in (None, UNKNOWN) and fig not in sources:
            report(ProfileError(f"figure has no source URL; add sources.{fig}", file=file, field=f"sources.{fig}"))
    if data.get("pricing"):
        _check_pricing(data["pricing"], file)
        if "pricing" not in sources:
            report(ProfileError("prices have no source URL; add sources.pricing", file=file, field="sources.pricing"))
    if "peak_tflops" not in data:
        report(ProfileError("missing figure", file=file, field="peak_tflops"))
    if data["default_precision"] not in data["precisions"]:
        report(ProfileError(f"{data['default_precision']!r} is not in precisions {data['precisions']}", file=file,
                            field="default_precision"))
    if data.get("unified_memory") is None and kind != "cpu":
        report(ProfileError("missing required field (true or false)", file=file, field="unified_memory"))


_CC_FORMS = {"nvidia": (re.compile(r"\d+\.\d+"), "a string like '8.6'"),
             "amd": (re.compile(r"gfx[0-9a-f]+"), "an AMD LLVM target like 'gfx942'")}


def _check_vendor(data: Mapping[str, Any], file: str) -> None:
    vendor = data.get("vendor", "nvidia")
    cc = data.get("compute_capability")
    if cc is not None and data["kind"] != "cpu":
        form, what = _CC_FORMS[vendor]
        if not form.fullmatch(str(cc).strip()):
            report(ProfileError(f"expected {what} for vendor {vendor}, got {cc!r}", file=file,
                                field="compute_capability"))
    if vendor != "nvidia":
        if data["kind"] != "gpu":
            report(ProfileError(f"vendor {vendor} needs kind gpu, got {data['kind']!r}", file=file, field="vendor"))
        if "tensorrt" in data["backends"]:
            report(ProfileError(f"TensorRT runs only on NVIDIA GPUs; remove it from backends (vendor {vendor})",
                                file=file, field="backends"))
    if vendor != "amd" and "migraphx" in data["backends"]:
        report(ProfileError(f"MIGraphX runs only on AMD GPUs; remove it from backends (vendor {vendor})",
                            file=file, field="backends"))


def _check_pricing(pricing: Mapping[str, Any], file: str) -> None:
    """The default price must be the instance's per-GPU price and no dearer than any primary offer."""
    per_gpu = float(pricing["usd_per_gpu_hour"])
    inst = pricing["instance"]
    expect = inst["usd_per_hour"] / inst["gpus"]
    if abs(per_gpu - expect) > max(0.0005, 0.005 * expect):
        report(ProfileError(f"{per_gpu:g} is not instance.usd_per_hour / instance.gpus = {inst['usd_per_hour']:g} / "
                            f"{inst['gpus']} = {expect:.4g}", file=file, field="pricing.usd_per_gpu_hour",
                            hint="to set your own price use price_per_hour_usd or plan --price"))
    for i, offer in enumerate(pricing.get("offers") or ()):
        each = offer["usd_per_hour"] / offer["gpus"]
        if not offer.get("secondary") and each < per_gpu - max(0.0005, 0.005 * each):
            report(ProfileError(f"offer {offer['provider']} {offer['name']} costs {each:.4g} per GPU-hour, less than "
                                f"usd_per_gpu_hour {per_gpu:g} (the default must be the cheapest primary offer)",
                                file=file, field=f"pricing.offers[{i}]"))
