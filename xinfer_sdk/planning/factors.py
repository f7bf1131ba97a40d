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
# The power term's reference when none is given: watts per SM-GHz at which it is 1.
POWER_REF_W_PER_SM_GHZ = 1.0
# Planning families that split an architecture family of the profiles (``Profile.arch_family``) where the silicon
# differs in what the device model fits. sm_87 (Jetson Orin, GA10B) runs twice the dense tensor FLOPs per SM and
# clock of sm_86 (GA102): 2048 FP16 FLOP/clk/SM (Jetson AGX Orin 64GB: 42.5 TFLOPS dense = 16 SMs x 2048 x 1.3 GHz,
# ../shared/reference/gpu-specs.yaml, NVIDIA's module datasheet) against 1024 (A10: 125 TFLOPS = 72 SMs x 1024 x
# 1.695 GHz, the A10 datasheet, 72 SMs: GA102 whitepaper) -- GA100's per-SM rate -- with LPDDR5 shared with the CPU
# and a module power budget: its efficiency is fitted apart from the discrete sm_86 boards. Likewise sm_120/121
# (RTX PRO 6000 Blackwell, GB10) run 1024 FP16 FLOP/clk/SM against sm_100's 8192 (FP16_FLOP_PER_SM_CLOCK below).
PLANNING_FAMILY_BY_CC = {"8.7": "ampere-orin", "12.0": "blackwell-rtx", "12.1": "blackwell-rtx"}
# Power groups (``power_group``): the families whose boards share one power reference. Every family is its own
# group except the discrete Ampere boards: the A10 (sm_86) is compared with the four A100s (sm_80), the one
# cross-family comparison that published results check (the A10 alone in its family was its own reference, and
# its BERT plans came out 15-21 % optimistic; docs/planning.md, third refit).
POWER_GROUPS = {"ampere-dc": "ampere"}
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
        "GPU with fewer watts per SM-GHz than its power group (A10: 150 W for 72 SMs x 1.695 GHz) reaches a "
        "smaller share of its peak; matrix efficiency x (W per SM-GHz / the group's reference)^power_exponent")),
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


# Dense FP16 tensor FLOPs one SM (AMD: one CU) issues per clock, by compute capability / gfx target: a board's
# dense FP16 peak / this = its SM-GHz (SMs x boost clock), the amount of silicon its power budget has to feed.
# Each figure is the vendor's peak = units x clock x rate, checked on a shipped profile.
FP16_FLOP_PER_SM_CLOCK: dict[str, tuple[int, str]] = {
    "7.2": (1024, "Volta: 8 tensor cores x 64 FMA per SM (NVIDIA Tesla V100 whitepaper)"),
    "7.5": (1024, "Turing: 8 tensor cores x 64 FMA per SM (Turing whitepaper); T4 65 TFLOPS = 40 SMs x 1.59 GHz x 1024"),
    "8.0": (2048, "GA100: 4 tensor cores x 256 FMA per SM (A100 whitepaper); 312 TFLOPS = 108 SMs x 1.41 GHz x 2048"),
    "8.6": (1024, "GA10x: 4 tensor cores x 128 dense FMA per SM (GA102 whitepaper); A10 125 TFLOPS = 72 SMs x "
                  "1.695 GHz x 1024"),
    "8.7": (2048, "GA10B (Orin): Jetson AGX Orin 64GB 42.5 TFLOPS = 16 SMs x 1.3 GHz x 2048 (module datasheet)"),
    "8.9": (1024, "Ada: L4 121 TFLOPS = 58 SMs x 2.04 GHz x 1024 (Ada whitepaper, L4 datasheet)"),
    "9.0": (4096, "Hopper: 4 tensor cores x 512 dense FMA per SM (H100 whitepaper); 989 TFLOPS = 132 SMs x 1.83 GHz "
                  "x 4096"),
    "10.0": (8192, "Blackwell datacenter (sm_100): twice Hopper's per-SM rate (B200 2.25 PFLOPS dense FP16 = 148 SMs "
                   "x ~1.86 GHz x 8192)"),
    "10.3": (8192, "Blackwell Ultra (sm_103): B300 dense FP16 as B200"),
    "11.0": (8192, "Jetson Thor (sm_110): Blackwell datacenter SM rate"),
    "12.0": (1024, "Blackwell workstation (sm_120): RTX PRO 6000 500 TFLOPS = 188 SMs x 2.6 GHz x 1024"),
    "12.1": (1024, "GB10 (sm_121): sm_120's per-SM rate"),
    "gfx942": (2048, "CDNA3: MI300X 1307 TFLOPS = 304 CUs x 2.1 GHz x 2048 (AMD CDNA3 whitepaper)"),
    "gfx950": (4096, "CDNA4: MI355X 2516 TFLOPS = 256 CUs x 2.4 GHz x 4096 (AMD CDNA4 whitepaper)"),
}


def power_group(profile) -> str:
    """Which boards a board's power budget is compared with: those of its planning family, the discrete Ampere
    boards together (``POWER_GROUPS``)."""
    fam = planning_family(profile)
    return POWER_GROUPS.get(fam, fam)


def sm_ghz(profile) -> float | None:
    """SMs (CUs) x boost clock in GHz, from the dense FP16 (else BF16) peak and the per-SM rate; None if unknown."""
    fp16 = profile.peak("fp16")[0] or profile.peak("bf16")[0]
    rate = FP16_FLOP_PER_SM_CLOCK.get(profile.compute_capability or "")
    return fp16 * 1e3 / rate[0] if fp16 and rate else None


def watts_per_sm_ghz(profile) -> float | None:
    """Board power per SM-GHz (what the power budget feeds); None when the power or the SM-GHz is not known."""
    s = sm_ghz(profile)
    return profile.tdp_w / s if profile.tdp_w and s else None


def power_reference(family: str, data: Mapping[str, Any] | None = None) -> tuple[float | None, str]:
    """(W per SM-GHz at which the power term of ``family`` is 1, where it comes from); (None, why) when the factors
    file stores none for the family: then the board is its own reference and gets no power term."""
    data = load() if data is None else data
    e = (data.get("power_reference") or {}).get(family)
    if not e:
        return None, f"no power reference stored for the {family} family: no power term"
    return float(e["value"]), (f"the {family} family's reference {float(e['value']):.3g} W per SM-GHz (geometric "
                               f"mean over the shipped boards: {', '.join(e.get('profiles', ()))})")


def power_term(tdp_w: float | None, sm_ghz_: float | None, exponent: float,
               reference: float | None = POWER_REF_W_PER_SM_GHZ) -> tuple[float, str]:
    """(multiplier, how) for the matrix efficiency of a board of ``tdp_w`` watts feeding ``sm_ghz_`` SM-GHz (SMs x
    boost clock), relative to its power group's ``reference`` W per SM-GHz (``power_group``): a board with fewer
    watts for the same silicon x clock cannot hold its boost clock under a full tensor load. Watts per SM, not per
    tensor TFLOPS: the whole SM draws power (register file, shared memory, schedulers), and an sm_80 SM issues twice
    the tensor FLOPs of an sm_86 one, so W/TFLOPS made the 150 W A10 look better fed than a 250 W A100 PCIe."""
    if not exponent:
        return 1.0, "no power term"
    if not tdp_w or not sm_ghz_:
        return 1.0, "no power term (tdp_w or the SM-GHz is not known)"
    if not reference:
        return 1.0, "no power term (no reference W per SM-GHz for this family)"
    w = tdp_w / sm_ghz_
    raw = (w / reference) ** exponent
    term = min(max(raw, POWER_CLIP[0]), POWER_CLIP[1])
    return term, (f"power term ({tdp_w:g} W / {sm_ghz_:.4g} SM-GHz = {w:.3g} W per SM-GHz, / {reference:.3g} "
                  f"reference)^{exponent:.3g} = {term:.3g}" + (" (clipped)" if term != raw else ""))
