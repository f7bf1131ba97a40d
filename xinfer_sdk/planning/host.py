"""The `cpu` profile's figures, estimated for this host (the YAML leaves them null: they depend on the machine).

Peak = usable cores x clock x operations per cycle per core for the widest instructions the CPU has; memory
bandwidth = a short copy measurement (or a documented default when measuring is switched off). These are
estimates of what the silicon could do, not what ONNX Runtime will reach: ``plan --measure`` runs the model
and fits the efficiency. Every figure carries its derivation, printed by ``plan --explain``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path

from ..profiles import HostInfo, read_host

log = logging.getLogger(__name__)

# FP32 FLOPs per cycle per core (2 FLOPs per FMA lane):
#   AVX-512: 2 FMA units x 16 lanes x 2 (Intel Xeon Scalable Gold/Platinum have two 512-bit FMA ports; the
#   Intel 64 and IA-32 Architectures Optimization Reference Manual, ch. "Intel AVX-512"). Parts with one
#   port reach half: --measure absorbs that.
#   AVX2 + FMA: 2 x 8 x 2 = 32 (Haswell and later, Zen 2 and later).  Arm NEON / ASIMD: 2 x 4 x 2 = 16
#   (two 128-bit FMA pipes: Cortex-A76/A78, Neoverse N1).  SSE only: 4 x 2 = 8.
FP32_PER_CYCLE = (("avx512f", 64, "AVX-512: 2 FMA units x 16 fp32 lanes x 2"),
                  ("fma", 32, "AVX2/FMA: 2 FMA units x 8 fp32 lanes x 2"),
                  ("asimd", 16, "Arm ASIMD: 2 FMA pipes x 4 fp32 lanes x 2"))
# INT8 operations per cycle per core (2 ops per multiply-accumulate):
#   AMX-INT8: 1,024 INT8 MACs per cycle per core (Intel AMX, Sapphire Rapids product brief) = 2,048 ops.
#   AVX-512 VNNI: VPDPBUSD does 64 u8xs8 MACs per 512-bit instruction, 2 ports = 256 ops (4x FP32).
#   AVX-VNNI (256-bit): 128 ops.  Arm I8MM (SMMLA): 2x the dot-product rate; Arm DOTPROD (SDOT): 4x FP32.
#   Without any of these (AVX2 VPMADDUBSW): 2x FP32.
INT8_PER_CYCLE = (("amx_int8", 2048, "AMX-INT8: 1,024 MACs/cycle/core"),
                  ("avx512_vnni", 256, "AVX-512 VNNI: 2 ports x 64 MACs x 2"),
                  ("avx_vnni", 128, "AVX-VNNI: 2 ports x 32 MACs x 2"),
                  ("i8mm", 128, "Arm I8MM: 2 pipes x 32 MACs x 2"),
                  ("asimddp", 64, "Arm DOTPROD: 2 pipes x 16 MACs x 2"))
# BF16: AMX-BF16 512 MACs/cycle/core = 1,024 FLOPs; AVX512_BF16 (VDPBF16PS) 2x FP32.
BF16_PER_CYCLE = (("amx_bf16", 1024, "AMX-BF16: 512 MACs/cycle/core"),
                  ("avx512_bf16", 128, "AVX512_BF16: 2x the FP32 rate"))
# FP16 GEMMs: native only with AVX512-FP16 (2x FP32); elsewhere ONNX Runtime computes in FP32.
FP16_PER_CYCLE = (("avx512_fp16", 128, "AVX512-FP16: 2x the FP32 rate"),)

# Used when the copy measurement is switched off: a conservative per-core figure for one DDR4/DDR5 stream
# (one core alone rarely exceeds ~10-15 GB/s; McCalpin's STREAM results, www.cs.virginia.edu/stream/).
DEFAULT_GBPS_PER_CORE = 8.0
DEFAULT_CLOCK_GHZ = 2.0  # when /proc/cpuinfo has no clock (some Arm kernels): a low, common base clock
# In a clock source: the clock is not the CPU's maximum (turbo runs faster), so its peak is a floor.
NOMINAL = "turbo is not visible"


@dataclasses.dataclass(frozen=True)
class HostPeaks:
    cores: float
    clock_ghz: float
    clock_source: str
    tflops: dict[str, float]  # precision -> peak
    derivation: dict[str, str]  # precision -> how
    bandwidth_gbps: float
    bandwidth_source: str
    host: HostInfo

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["host"] = dataclasses.asdict(self.host)
        return d


def read_clock_ghz(root: str = "/") -> tuple[float, str]:
    """Max clock from cpufreq when the kernel exposes it, else the 'cpu MHz' line of /proc/cpuinfo."""
    r = Path(root)
    try:
        khz = int((r / "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text().strip())
        return khz / 1e6, "cpufreq cpuinfo_max_freq"
    except (OSError, ValueError):
        pass
    try:
        text = (r / "proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    mhz = [float(line.split(":")[1]) for line in text.splitlines()
           if line.lower().startswith("cpu mhz") and ":" in line and line.split(":")[1].strip()]
    if mhz:
        return max(mhz) / 1e3, f"/proc/cpuinfo 'cpu MHz' (nominal; {NOMINAL}, --measure corrects)"
    return DEFAULT_CLOCK_GHZ, f"no clock in /proc/cpuinfo: assumed {DEFAULT_CLOCK_GHZ} GHz ({NOMINAL})"


def _pick(table, isa: set[str], default: tuple[int, str]) -> tuple[int, str]:
    for flag, per_cycle, why in table:
        if flag in isa:
            return per_cycle, why
    return default


def measure_copy_gbps(mbytes: int = 64, repeats: int = 5) -> float:
    """Best-of-N bandwidth of a numpy copy of ``mbytes`` (read + write), in GB/s. Takes ~0.1 s."""
    import numpy as np

    a = np.ones(mbytes * 1024 * 1024 // 4, dtype=np.float32)
    b = np.empty_like(a)
    np.copyto(b, a)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(b, a)
        dt = time.perf_counter() - t
        best = max(best, 2 * a.nbytes / dt / 1e9)
    return best


def host_peaks(host: HostInfo | None = None, *, measure_bandwidth: bool = True, clock: tuple[float, str] | None = None
               ) -> HostPeaks:
    """Peaks of this machine (or of ``host``, e.g. a recorded one in a test)."""
    host = host or read_host()
    ghz, clock_src = clock or read_clock_ghz()
    cores = max(1.0, float(host.usable_cpus))
    isa = set(host.isa)
    if "avx512f" not in isa and "fma" not in isa and host.arch.lower() in ("aarch64", "arm64"):
        isa.add("asimd")
    fp32, fp32_why = _pick(FP32_PER_CYCLE, isa, (8, "SSE: 4 fp32 lanes x 2"))
    int8, int8_why = _pick(INT8_PER_CYCLE, isa, (2 * fp32, "no INT8 dot-product instructions: 2x the FP32 rate"))
    bf16, bf16_why = _pick(BF16_PER_CYCLE, isa, (fp32, "no BF16 instructions: computed at the FP32 rate"))
    fp16, fp16_why = _pick(FP16_PER_CYCLE, isa, (fp32, "no FP16 GEMM instructions: computed at the FP32 rate"))
    base = f"{cores:g} cores x {ghz:.3g} GHz"
    tflops, how = {}, {}
    for prec, per, why in (("fp32", fp32, fp32_why), ("tf32", fp32, "no TF32 on CPUs: the FP32 rate"),
                           ("fp16", fp16, fp16_why), ("bf16", bf16, bf16_why), ("int8", int8, int8_why),
                           ("fp8", fp32, "no FP8 on CPUs: the FP32 rate")):
        tflops[prec] = cores * ghz * per / 1e3
        how[prec] = f"{base} x {per} per cycle ({why})"
    if measure_bandwidth:
        bw = measure_copy_gbps()
        bw_src = "measured: best of 5 numpy copies of 64 MiB (read + write) on one core"
    else:
        bw = DEFAULT_GBPS_PER_CORE * cores
        bw_src = f"default {DEFAULT_GBPS_PER_CORE:g} GB/s per core x {cores:g} cores (not measured)"
    return HostPeaks(cores=cores, clock_ghz=ghz, clock_source=clock_src, tflops=tflops, derivation=how,
                     bandwidth_gbps=bw, bandwidth_source=bw_src, host=host)


@functools.lru_cache(maxsize=2)
def this_host(measure_bandwidth: bool = True) -> HostPeaks:
    """Cached: the copy measurement runs once per process."""
    return host_peaks(measure_bandwidth=measure_bandwidth)
