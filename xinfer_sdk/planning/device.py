"""Device model: how long one batch takes on a profile, from a roofline per op class and precision.

For each op of the graph at batch b (``CostCurve``):

    t_op = max( soft_max( FLOPs / (peak[class, precision] x eff_compute[class]),  bytes / (bandwidth x eff_memory) ),
                kernel_floor ) + op_overhead                  (floor and overhead: executed ops, not fused ones)

``soft_max(a, b) = (a^2 + b^2)^(1/2)``: a smooth roofline. The sharp ``max`` assumes compute and memory
traffic overlap perfectly and under-predicts ops near the ridge point (on this project's CPU the MLP at
batch 8 ran 18-20 % slower than the sharp roofline); the sum assumes no overlap and over-predicts (18-20 %
the other way). The Euclidean middle (``ROOFLINE_P = 2``) kept both benchmark models within 10-11 %
(ResNet-18 within 5 % whatever the choice). It was chosen after seeing that CPU data, so it is a model-form
choice validated on one machine; on GPUs it is an unvalidated assumption like the efficiencies.
    S(b) = batch_overhead + requests x request_overhead + sum(t_op) + io_bytes(b) / (host_link x eff_link)
                                                                                   (io: discrete GPUs only)

The kernel floor is a device-side minimum (a GPU kernel never takes less than a few microseconds); the op
overhead is serial host work per op (ONNX Runtime's dispatch and intra-op thread-pool join on a CPU; zero
on a GPU, where launches are asynchronous and overlap the device).

The matrix classes (conv, matmul incl. attention) use the profile's dense tensor peak for the planned
precision (``profile.peak``: published or derived); FP32 uses TF32 tensor cores where the profile has them
(cuDNN's default math mode and TensorRT's TF32 builder flag, both on by default on Ampere and newer). The
other ops run on the vector units (the FP32 peak). Every factor below says where it comes from; none was
fitted to a particular model. ``plan --measure`` replaces the compute / memory efficiencies and the
per-batch overhead of the device at hand by values fitted to measured latencies.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import ProfileError
from ..profiles import Profile
from .cost import CostCurve
from .factors import boost_clock, gap_scale, gpu_factors, planning_family, power_reference, power_term, sm_ghz
from .gpu import fused_times
from .roofline import ROOFLINE_P, Factor, soft_max

__all__ = ["ROOFLINE_P", "Factor", "soft_max", "DeviceModel", "BatchTime", "device_model", "gpu_model", "cpu_model",
           "op_times", "batch_time", "worker_service", "executed", "matrix_precision"]


# ---- GPU: efficiencies, floors and overheads come from factors.py (priors, or fits to published results) ----
PCIE_GBPS = {"3": 15.75, "4": 31.5, "5": 63.0}  # per direction, x16 (PCI-SIG: 8 / 16 / 32 GT/s x 16 lanes, 128b/130b)
PCIE_BY_CC = {"7.5": "3", "8.0": "4", "8.6": "4", "8.9": "4", "9.0": "5", "10.0": "5", "10.3": "5", "12.0": "5",
              "gfx942": "5", "gfx950": "5"}
PCIE_SOURCE = ("PCIe generation per GPU from the vendors' datasheets (as collected with the profiles' sources) "
               "(T4 Gen3, A10/A100/L4/L40S Gen4, H100/H200/H20/B200/RTX PRO 6000 Gen5, MI300X/MI325X/MI355X Gen5 x16; "
               "B300 is listed as Gen6 with conflicting rates, so Gen5 is assumed); per-direction x16 rate from the "
               "PCI-SIG line rates. A profile's host_link_gbps (e.g. GB200's NVLink-C2C) replaces this rule")
EFF_LINK = Factor(0.8, "pinned host-to-device copies reach ~12-13 of 15.75 GB/s on PCIe Gen3 x16 (CUDA samples "
                       "bandwidthTest); protocol overhead ~20 %")

# ---- CPU factors (uncalibrated defaults; `plan --measure` fits compute, memory and overhead) ---------------
REQUEST_OVERHEAD = Factor(9e-6, "host CPU per request in the batching core (validation, enqueue, result delivery): "
                                "~9 us with asyncio callers on this project's 2-vCPU VM (docs/batching.md, "
                                "bench/batching.py); blocking callers in OS threads pay ~30 us")
CPU_EFF_MATRIX = Factor(0.6, "assumption for an uncalibrated CPU: MLAS/oneDNN GEMM and convolution kernels reach "
                             "~50-80 % of the FMA peak on large shapes; replaced by `plan --measure`")
CPU_EFF_VECTOR = Factor(0.3, "assumption: element-wise kernels are memory-bound; replaced by the fitted compute "
                             "efficiency with `plan --measure`")
CPU_EFF_MEMORY = Factor(1.0, "the bandwidth figure is already a measured achievable copy rate (not a datasheet "
                             "peak); replaced by `plan --measure`, which also captures cache-resident weights")
CPU_KERNEL_FLOOR = Factor(0.0, "a CPU has no launch latency; per-op costs are host work, counted as op overhead")
CPU_OP_OVERHEAD = Factor(5e-6, "assumption: ONNX Runtime dispatches an op and wakes/joins its intra-op thread pool in "
                               "a few microseconds; replaced by `plan --measure` when it measures several models")
CPU_BATCH_OVERHEAD = Factor(40e-6, "assumption: session.run setup, input/output copies and the batching core's "
                                   "hand-off (~tens of us); replaced by `plan --measure`")


@dataclasses.dataclass(frozen=True)
class DeviceModel:
    """The roofline of one profile at one precision, with every factor and where it came from."""

    profile: str
    kind: str  # gpu | jetson | cpu
    precision: str
    matrix_tflops: float
    matrix_basis: str  # how the matrix peak was obtained
    vector_tflops: float
    vector_basis: str
    bandwidth_gbps: float
    bandwidth_basis: str
    eff_matrix: Factor
    eff_vector: Factor
    eff_memory: Factor
    kernel_floor: Factor
    op_overhead: Factor
    batch_overhead: Factor
    request_overhead: Factor
    link_gbps: float | None  # host<->device copies (None: memory shared with the host)
    link_basis: str
    eff_link: Factor | None
    shared_device: bool  # GPU: concurrent workers share one device; CPU: workers split the cores
    cores: float = 1.0  # CPU: cores the workers split
    calibrated: bool = False
    calibration: dict[str, Any] | None = None
    # GPU: the engine runs fused kernels (``gpu.fused_times``); "roofline": one kernel per ONNX node (CPU)
    engine: str = "roofline"
    l2_bytes: float | None = None  # on-chip L2 (None: not known; nothing is assumed to stay on chip)
    l2_basis: str = ""
    l2_fraction: Factor | None = None  # share of the L2 a tensor may use and still stay on chip
    fused_attention: bool = False
    attention_basis: str = ""
    factors_basis: str = ""  # which fit / prior the efficiencies come from
    roofline_p: Factor | None = None  # GPU: the fitted soft-roofline exponent (None: ROOFLINE_P)

    @property
    def ridge(self) -> float:
        """FLOPs per byte where the matrix roofline turns from memory- to compute-bound."""
        return (self.matrix_tflops * 1e12 * self.eff_matrix.value) / (self.bandwidth_gbps * 1e9 * self.eff_memory.value)

    def with_factors(self, **changes: Any) -> DeviceModel:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("eff_matrix", "eff_vector", "eff_memory", "kernel_floor", "op_overhead", "batch_overhead",
                  "request_overhead", "eff_link", "l2_fraction", "roofline_p"):
            d[k] = None if getattr(self, k) is None else getattr(self, k).to_dict()
        d["ridge_flops_per_byte"] = self.ridge
        return d


@dataclasses.dataclass(frozen=True)
class BatchTime:
    """Predicted time of one batch on one device (one worker alone), split by what limits it."""

    batch: int
    seconds: float
    host_s: float  # per-batch overhead + host<->device copies (overlaps across workers)
    device_s: float  # sum over ops (the device is busy)
    compute_s: float  # part of device_s spent in compute-bound ops
    memory_s: float  # part of device_s spent in memory-bound ops
    floor_s: float  # part of device_s spent in ops shorter than the kernel floor, and in per-op overhead
    flops: float
    bytes: float
    copy_s: float = 0.0  # part of host_s spent copying inputs/outputs over the host link
    request_s: float = 0.0  # part of host_s spent on per-request work (requests x request_overhead)

    def parts(self) -> dict[str, float]:
        return {"compute": self.compute_s, "memory bandwidth": self.memory_s,
                "overhead": self.floor_s + self.host_s - self.copy_s, "host copies": self.copy_s}

    @property
    def bound(self) -> str:
        parts = self.parts()
        return max(parts, key=parts.get)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["bound"] = self.bound
        d["throughput"] = self.batch / self.seconds
        return d


def matrix_precision(profile: Profile, precision: str) -> tuple[str, str]:
    """Which peak the matrix units run at for a planned precision (FP32 -> TF32 where present)."""
    if precision == "fp32" and profile.kind != "cpu" and "tf32" in profile.precisions \
            and profile.peak("tf32")[0] is not None:
        return "tf32", "FP32 convolutions/GEMMs run on TF32 tensor cores (cuDNN default math mode, TensorRT TF32 flag)"
    return precision, ""


def _missing(profile: Profile, figure: str, precision: str, why: str) -> ProfileError:
    unknown = profile.figure_unknown(figure)
    state = "is unknown: the vendor publishes no figure" if unknown else "is not given"
    others = [p for p in profile.precisions if p != precision and profile.peak(p)[0] is not None]
    hint = f"plan --precision {' or '.join(others[:2])}" if others and figure.startswith("peak_tflops") else \
        f"give {figure} in a profile that extends {profile.name} (docs/profiles.md)"
    return ProfileError(f"cannot plan {precision.upper()} on {profile.name}: {figure} {state}; {why}",
                        file=profile.file or None, hint=hint)


def gpu_model(profile: Profile, precision: str) -> DeviceModel:
    prec, why = matrix_precision(profile, precision)
    peak, basis = profile.peak(prec)
    if peak is None:
        raise _missing(profile, f"peak_tflops.{prec}", precision, "the planner prices conv/matmul ops at that peak")
    if profile.memory_bandwidth_gbps is None:
        raise _missing(profile, "memory_bandwidth_gbps", precision, "the planner prices memory traffic with it")
    vec, vbasis = profile.peak("fp32")
    if vec is None:  # e.g. A10G publishes only BF16: vector ops at 1/8 of that, the Ampere tensor:FP32 ratio
        vec, vbasis = peak / 8.0, f"no FP32 figure: {prec.upper()} peak / 8 (Ampere tensor-to-FP32 ratio)"
    unified = profile.unified_memory or profile.kind == "jetson"
    gen = PCIE_BY_CC.get(profile.compute_capability or "", "4")
    link = getattr(profile, "host_link_gbps", None)
    if link is not None:
        link_gbps, link_basis = float(link), ("profile host_link_gbps: "
                                               + "; ".join(profile.sources.get("host_link_gbps", ())))
    else:
        link_gbps, link_basis = PCIE_GBPS[gen], f"PCIe Gen{gen} x16; {PCIE_SOURCE}"
    family = planning_family(profile)
    fac = gpu_factors(family, jetson=profile.kind == "jetson")
    l2 = getattr(profile, "l2_cache_mb", None)
    l2_src = "; ".join(getattr(profile, "sources", {}).get("l2_cache_mb", ()))
    if l2 is not None:
        l2_basis = f"profile l2_cache_mb {l2:g} MiB ({l2_src or 'profile'})"
    elif profile.figure_unknown("l2_cache_mb"):
        l2_basis = "profile l2_cache_mb is unknown: no tensor is assumed to stay on chip (slower estimate)"
    else:
        l2_basis = "profile gives no l2_cache_mb: no tensor is assumed to stay on chip (slower estimate)"
    attn, attn_basis = fused_attention(profile)
    ref, ref_how = power_reference(family)
    term, how = power_term(profile.tdp_w, sm_ghz(profile), fac["power_exponent"].value, ref)
    how = f"{how}; {ref_how}"
    base = fac["eff_matrix"]
    gap = fac["kernel_gap"]
    mhz, clock_src = boost_clock(profile)
    scale, scale_how = gap_scale(mhz)
    gap = Factor(gap.value * scale, (f"{gap.value * 1e6:.3g} us at the reference clock, {scale_how} ({clock_src}); "
                                     f"{gap.source}"))
    eff_m = base if not fac["power_exponent"].value else Factor(
        base.value * term, f"{base.value:.3g} x {how}; {base.source}; exponent: {fac['power_exponent'].source}")
    return DeviceModel(
        profile=profile.name, kind=profile.kind, precision=precision, matrix_tflops=float(peak),
        matrix_basis=f"{prec.upper()} dense peak, {basis}" + (f"; {why}" if why else ""),
        vector_tflops=float(vec), vector_basis=f"FP32 peak, {vbasis}", bandwidth_gbps=float(profile.memory_bandwidth_gbps),
        bandwidth_basis="profile memory_bandwidth_gbps: " + "; ".join(profile.sources.get("memory_bandwidth_gbps", ())),
        eff_matrix=eff_m, eff_vector=fac["eff_vector"], eff_memory=fac["eff_memory"],
        kernel_floor=fac["kernel_floor"], op_overhead=gap, batch_overhead=fac["batch_overhead"],
        request_overhead=REQUEST_OVERHEAD, link_gbps=None if unified else link_gbps,
        link_basis="memory shared with the host: no copies" if unified else link_basis,
        eff_link=None if unified else EFF_LINK, shared_device=True, engine="fused",
        l2_bytes=None if l2 is None else float(l2) * 1024 * 1024, l2_basis=l2_basis, l2_fraction=fac["l2_fraction"],
        fused_attention=attn, attention_basis=attn_basis, factors_basis=fac["_basis"].source,
        roofline_p=fac["roofline_p"])


def fused_attention(profile: Profile) -> tuple[bool, str]:
    """Whether the engine runs QK^T-softmax-V as one kernel on this GPU."""
    cc = profile.compute_capability or ""
    if profile.vendor != "nvidia":
        return True, ("fused (flash) attention: MIGraphX / Composable Kernel flash-attention kernels on CDNA "
                      "(rocm.docs.amd.com, MIGraphX and Composable Kernel)")
    try:
        major, minor = (int(x) for x in cc.split(".")[:2])
    except ValueError:
        return False, f"compute capability {cc!r} unknown: attention runs as separate kernels"
    if (major, minor) >= (7, 5):
        return True, (f"sm_{major}{minor}: TensorRT runs multi-head attention as one fused kernel on Turing and newer "
                      "(fused MHA kernels of the bertQKVToContextPlugin, github.com/NVIDIA/TensorRT/tree/main/plugin/"
                      "bertQKVToContextPlugin, and the builder's MHA fusion since TensorRT 8.6)")
    return False, (f"sm_{major}{minor}: no fused attention kernel before Turing: QK^T, softmax and AV are three "
                   "kernels and the scores go through memory")


def cpu_model(profile: Profile, precision: str, peaks) -> DeviceModel:
    return DeviceModel(
        profile=profile.name, kind="cpu", precision=precision, matrix_tflops=peaks.tflops[precision],
        matrix_basis=f"estimated for this host: {peaks.derivation[precision]}; clock from {peaks.clock_source}",
        vector_tflops=peaks.tflops["fp32"], vector_basis=f"estimated: {peaks.derivation['fp32']}",
        bandwidth_gbps=peaks.bandwidth_gbps, bandwidth_basis=peaks.bandwidth_source, eff_matrix=CPU_EFF_MATRIX,
        eff_vector=CPU_EFF_VECTOR, eff_memory=CPU_EFF_MEMORY, kernel_floor=CPU_KERNEL_FLOOR,
        op_overhead=CPU_OP_OVERHEAD, batch_overhead=CPU_BATCH_OVERHEAD, request_overhead=REQUEST_OVERHEAD, link_gbps=None, link_basis="the CPU reads host memory directly",
        eff_link=None, shared_device=False, cores=peaks.cores)


def device_model(profile: Profile, precision: str, *, peaks=None) -> DeviceModel:
    """The roofline for ``profile`` at ``precision`` (peaks: a HostPeaks for the cpu profile)."""
    if profile.kind == "cpu":
        if peaks is None:
            from .host import this_host

            peaks = this_host()
        return cpu_model(profile, precision, peaks)
    return gpu_model(profile, precision)


# ----------------------------------------------------------------------------------------------------------
def executed(curve: CostCurve) -> np.ndarray:
    """Ops that run as their own kernel (not fused into a neighbour, not a view / shape / Q-DQ op)."""
    free = np.isin(np.array(curve.op_classes), ("view", "shape", "quant"))
    return ~free & ~curve.fused


def op_times(dev: DeviceModel, curve: CostCurve, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time, compute time, memory time) per op at batch b on one device (all of its cores). A GPU runs fused
    kernels (``gpu.fused_times``: each kernel's figures on its first op); a CPU one kernel per ONNX node."""
    if dev.engine == "fused" and curve.kernels is not None:
        return fused_times(dev, curve, b)
    flops, nbytes = curve.at(b)
    peak = np.where(curve.matrix, dev.matrix_tflops * dev.eff_matrix.value, dev.vector_tflops * dev.eff_vector.value)
    t_c = flops / (peak * 1e12)
    t_m = nbytes / (dev.bandwidth_gbps * 1e9 * dev.eff_memory.value)
    free = np.isin(np.array(curve.op_classes), ("view", "shape", "quant"))
    run = ~free & ~curve.fused
    t = soft_max(t_c, t_m)
    t = np.where(run, np.maximum(t, dev.kernel_floor.value) + dev.op_overhead.value, t)
    t = np.where(free, 0.0, t)
    return t, np.where(free, 0.0, t_c), np.where(free, 0.0, t_m)


def batch_time(dev: DeviceModel, curve: CostCurve, b: int, *, requests: int | None = None) -> BatchTime:
    """One batch of b samples made of ``requests`` requests (default: b requests of one sample each)."""
    t, t_c, t_m = op_times(dev, curve, b)
    roof = soft_max(t_c, t_m, dev.roofline_p.value if dev.roofline_p is not None else ROOFLINE_P)
    comp_mask = t_c >= t_m
    compute = float(roof[comp_mask].sum())
    memory = float(roof[~comp_mask].sum())
    floor = float((t - roof).sum())  # kernel floors and per-op overhead
    io = 0.0
    if dev.link_gbps:
        io = curve.io_bytes(b) / (dev.link_gbps * 1e9 * dev.eff_link.value)
    req = (b if requests is None else requests) * dev.request_overhead.value
    host = dev.batch_overhead.value + req + io
    device = compute + memory + floor
    flops, nbytes = curve.at(b)
    return BatchTime(batch=b, seconds=host + device, host_s=host, device_s=device, compute_s=compute, memory_s=memory,
                     floor_s=floor, flops=float(flops.sum()), bytes=float(nbytes.sum()), copy_s=io,
                     request_s=req)


def worker_service(dev: DeviceModel, bt: BatchTime, concurrency: int) -> tuple[float, float]:
    """(host part, device part) of one batch for one of ``concurrency`` workers.

    GPU: workers share the device; the simulator runs device parts one at a time in submission order, so
    the device's total throughput is never exceeded; the host parts overlap.
    CPU: each worker owns cores / concurrency threads, so its device part is that much longer (ideal thread
    scaling assumed); kernel floors do not shrink with more threads.
    """
    if dev.shared_device or concurrency <= 1:
        return bt.host_s, bt.device_s
    return bt.host_s, bt.floor_s + (bt.compute_s + bt.memory_s) * concurrency
