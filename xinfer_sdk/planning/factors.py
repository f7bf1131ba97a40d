"""The GPU device model's free factors: sourced priors, and values fitted to published results per architecture
family, read from ``gpu_factors.yaml`` (written by ``bench/plan_gpu_reference.py --write``, with provenance).

    gpu_factors("ada")   # {"eff_matrix": Factor(...), ..., "_basis": Factor(0, "which fit")}

Lookup: the family's own fit when published records of that family were fitted, else the fit over every
family (``all``), else the priors below. A fit is never per model: the planner sees only the ONNX graph.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .roofline import Factor

FACTORS_FILE = Path(__file__).with_name("gpu_factors.yaml")
CLOCKS_FILE = Path(__file__).with_name("gpu_clocks.yaml")
NAMES = ("eff_matrix", "power_exponent", "eff_vector", "eff_memory", "l2_fraction", "kernel_floor", "kernel_gap",
         "batch_overhead", "roofline_p")
# The power term's reference when a family has none stored: watts per dense FP16 tensor TFLOPS at which it is 1.
POWER_REF_W_PER_TFLOPS = 1.0
# Planning families that split an architecture family of the profiles (``Profile.arch_family``) where the silicon
# differs in what the device model fits. sm_87 (Jetson Orin, GA10B) runs twice the dense tensor FLOPs per SM and
# clock of sm_86 (GA102): 2048 FP16 FLOP/clk/SM (Jetson AGX Orin 64GB: 42.5 TFLOPS dense = 16 SMs x 2048 x 1.3 GHz,
# ../shared/reference/gpu-specs.yaml, NVIDIA's module datasheet) against 1024 (A10: 125 TFLOPS = 72 SMs x 1024 x
# 1.695 GHz, the A10 datasheet, 72 SMs: GA102 whitepaper) -- GA100's per-SM rate -- with LPDDR5 shared with the CPU
# and a module power budget: its efficiency is fitted apart from the discrete sm_86 boards.
PLANNING_FAMILY_BY_CC = {"8.7": "ampere-orin"}
# Families without asynchronous global->shared copies (cp.async needs compute capability 8.0; CUDA C++ Programming
# Guide, "Asynchronous Data Copies"): their kernels expose the latency of their first loads, so their kernel gap
# carries a shared fitted factor (``pre_ampere_gap`` in the 'all' fit), learned from all of them together; so does
# their matrix efficiency (``pre_ampere_eff``): without cp.async a GEMM main loop cannot pipeline its loads in stages.
PRE_AMPERE_FAMILIES = ("volta", "volta-xavier", "turing")
POWER_CLIP = (0.5, 1.5)

# ---- priors: what the model assumes before (or without) any fit, each with its source ----------------------
PRIORS: dict[str, Factor] = {
    "eff_matrix": Factor(0.5, (
        "prior between two public anchors: large cuBLAS/cuDNN tensor-core GEMMs reach ~70-80 % of the dense peak, "
        "whole networks less: MLPerf Inference v1.0 closed, A100-PCIe ResNet-50 offline 31,063 samples/s x 8.2 GOP "
        "= 41 % of 624 dense INT8 TOPS (github.com/mlcommons/inference_results_v1.0)")),
    "power_exponent": Factor(0.0, (
        "prior: no power term. Fitted: sustained clocks under a full tensor load are capped by board power, so a "
        "GPU with fewer watts per peak TFLOPS (L4: 72 W for 121 FP16 TFLOPS) reaches a smaller share of its "
        "peak; matrix efficiency x (tdp_w / FP16 peak, W per TFLOPS)^power_exponent")),
    "eff_vector": Factor(0.5, "prior: same as the matrix units; element-wise kernels are memory-bound on every GPU"),
    "eff_memory": Factor(0.85, (
        "streaming kernels reach ~85-90 % of datasheet DRAM bandwidth: 1.80 of 2.04 TB/s (88 %) on an A100 80GB "
        "with Nsight Compute (forums.developer.nvidia.com/t/trouble-to-reach-peak-bandwidth-of-a100/339083)")),
    "l2_fraction": Factor(0.5, (
        "prior: a tensor stays on chip when it fits in half the L2 (the other half holds the weights and the "
        "tensors of the kernel in flight); L2 residency control: CUDA C++ Programming Guide, 'L2 cache "
        "set-aside for persisting accesses' allows at most 75 % (A100) to be set aside")),
    "kernel_floor": Factor(3e-6, (
        "a kernel never finishes in less than a few microseconds: launch + synchronise 4-6 us per kernel "
        "(NVIDIA, 'Getting Started with CUDA Graphs', developer.nvidia.com/blog/cuda-graphs); TensorRT enqueues "
        "asynchronously, hiding part of it: 3 us")),
    "kernel_gap": Factor(0.0, "prior: launches are asynchronous and back-to-back kernels overlap their launch with "
                              "the previous kernel; the floor covers the device side"),
    "roofline_p": Factor(2.0, (
        "prior: a kernel's compute and DRAM time combine as (compute^p + memory^p)^(1/p) with p = 2, the exponent "
        "validated against this project's CPU measurements (planning/device.py); fitted on GPUs: how well a fused "
        "kernel overlaps its DRAM traffic with its math (p = 1: no overlap, large p: perfect)")),
    "batch_overhead": Factor(100e-6, (
        "prior, not measured on a GPU: gather the batch, enqueue, synchronise the stream, scatter the outputs")),
}
JETSON_FLOOR_SCALE = Factor(2.0, (
    "Jetson's Arm host launches kernels about half as fast as an x86 host (forums.developer.nvidia.com/t/"
    "question-about-inference-using-tensorrt-api/266121 shows Orin launch-bound): 2x the kernel floor"))


@functools.lru_cache(maxsize=4)
def load(path: str | None = None) -> dict[str, Any]:
    """The factors file as a dict ({} when it is absent: priors only)."""
    p = Path(path) if path else FACTORS_FILE
    if not p.is_file():
        return {}
    with open(p) as f:
        return yaml.safe_load(f) or {}


def _entry(values: Mapping[str, Any], name: str, basis: str) -> Factor | None:
    v = values.get(name)
    if v is None:
        return None
    if isinstance(v, Mapping):
        return Factor(float(v["value"]), f"{basis}: {v.get('source', '')}".rstrip(": "))
    return Factor(float(v), basis)


def gpu_factors(family: str, *, jetson: bool = False, data: Mapping[str, Any] | None = None) -> dict[str, Factor]:
    """Every factor for a GPU of ``family``, each with its source; ``_basis`` says which fit applied."""
    data = load() if data is None else data
    fits = data.get("fits") or {}
    prov = data.get("provenance") or {}
    when = f"fitted {prov.get('date', '?')} by {prov.get('command', 'bench/plan_gpu_reference.py --write')}"
    if family in fits:
        values, basis = fits[family], f"{when} on the published records of the {family} family"
    elif "all" in fits:
        values, basis = fits["all"], (f"{when} on the published records of every family (none of the {family} "
                                      "family was fitted)")
    else:
        values, basis = {}, "priors (no fit in gpu_factors.yaml)"
    out = {}
    for name in NAMES:
        out[name] = _entry(values, name, basis) or PRIORS[name]
    for name, pre_name in (("kernel_gap", "pre_ampere_gap"), ("eff_matrix", "pre_ampere_eff")):
        pre = _entry(fits.get("all") or {}, pre_name, basis)
        if family in PRE_AMPERE_FAMILIES and family not in fits and pre is not None:  # a family fit carries it
            g = out[name]
            out[name] = Factor(g.value * pre.value, f"{g.source}; x {pre.value:.3g} {pre.source}")
    if jetson:
        f = out["kernel_floor"]
        out["kernel_floor"] = Factor(f.value * JETSON_FLOOR_SCALE.value, f"{f.source}; x{JETSON_FLOOR_SCALE.value:g} "
                                                                         f"on Jetson: {JETSON_FLOOR_SCALE.source}")
    out["_basis"] = Factor(0.0, basis)
    return out


@functools.lru_cache(maxsize=2)
def _clocks(path: str | None = None) -> dict[str, Any]:
    p = Path(path) if path else CLOCKS_FILE
    if not p.is_file():
        return {}
    with open(p) as f:
        return yaml.safe_load(f) or {}


def reference_clock_mhz() -> float:
    """The clock the fitted kernel gap is expressed at (gpu_clocks.yaml ``reference_mhz``)."""
    return float(_clocks().get("reference_mhz") or 1410.0)


def boost_clock(profile) -> tuple[float | None, str]:
    """(boost clock in MHz, its source) of a profile or of the shipped profile it extends; (None, why) if unknown."""
    table = _clocks().get("boost_mhz") or {}
    for name in dict.fromkeys((profile.name, *getattr(profile, "chain", ()))):
        e = table.get(name)
        if e:
            return float(e["value"]), f"{name} boost clock {e['value']:g} MHz ({'; '.join(e.get('sources', ()))})"
    return None, f"no boost clock for {profile.name} in {CLOCKS_FILE.name}"


def gap_scale(boost_mhz: float | None) -> tuple[float, str]:
    """(multiplier, how) of the fitted kernel gap on a GPU clocked at ``boost_mhz``: the gap is a number of cycles."""
    ref = reference_clock_mhz()
    if not boost_mhz:
        return 1.0, f"boost clock not known: the gap as fitted at the reference {ref:g} MHz"
    return ref / boost_mhz, f"a fixed number of cycles: x {ref:g} / {boost_mhz:g} MHz = {ref / boost_mhz:.3g}"


def planning_family(profile) -> str:
    """The family the device model's factors are fitted and looked up by: the profile's architecture family, split
    where the silicon differs (``PLANNING_FAMILY_BY_CC``)."""
    return PLANNING_FAMILY_BY_CC.get(profile.compute_capability or "", profile.arch_family)


def watts_per_tflops(profile) -> float | None:
    """Board power per dense FP16 (else BF16) tensor TFLOPS; None when either figure is not known."""
    fp16 = profile.peak("fp16")[0] or profile.peak("bf16")[0]
    return profile.tdp_w / fp16 if profile.tdp_w and fp16 else None


def power_reference(family: str, data: Mapping[str, Any] | None = None) -> tuple[float | None, str]:
    """(W per FP16 TFLOPS at which the power term of ``family`` is 1, where it comes from); (None, why) when the
    factors file stores none for the family: then the board is its own reference and gets no power term."""
    data = load() if data is None else data
    e = (data.get("power_reference") or {}).get(family)
    if not e:
        return None, f"no power reference stored for the {family} family: no power term"
    return float(e["value"]), (f"the {family} family's reference {float(e['value']):.3g} W/TFLOPS (geometric mean "
                               f"over its shipped profiles: {', '.join(e.get('profiles', ()))})")


def power_term(tdp_w: float | None, fp16_tflops: float | None, exponent: float,
               reference: float | None = POWER_REF_W_PER_TFLOPS) -> tuple[float, str]:
    """(multiplier, how) for the matrix efficiency of a board of ``tdp_w`` watts and ``fp16_tflops`` dense peak,
    relative to its family's ``reference`` W per TFLOPS (the same silicon on a larger power budget sustains higher
    clocks under a full tensor load; across families the process node differs, so the family's fitted efficiency
    carries that part)."""
    if not exponent:
        return 1.0, "no power term"
    if not tdp_w or not fp16_tflops:
        return 1.0, "no power term (tdp_w or the FP16 peak is not known)"
    if not reference:
        return 1.0, "no power term (no reference W/TFLOPS for this family)"
    w = tdp_w / fp16_tflops
    raw = (w / reference) ** exponent
    term = min(max(raw, POWER_CLIP[0]), POWER_CLIP[1])
    return term, (f"power term ({tdp_w:g} W / {fp16_tflops:g} FP16 TFLOPS = {w:.3g} W/TFLOPS, / {reference:.3g} "
                  f"reference)^{exponent:.3g} = {term:.3g}" + (" (clipped)" if term != raw else ""))
