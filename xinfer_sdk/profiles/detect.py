"""Which profile fits this machine, and why.

Order: ``XINFER_PROFILE`` (explicit) -> NVML device name (nvidia-ml-py) -> Jetson (``/etc/nv_tegra_release``,
``/proc/device-tree/model``, ``/proc/device-tree/compatible``) -> ``cpu``. No GPU, no NVML library, or no
Jetson files simply means ``cpu``, quietly. Every reader takes a ``root`` so tests can replay recorded
machines.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
from collections.abc import Sequence
from pathlib import Path

from .loader import ProfileRegistry
from .schema import Profile

log = logging.getLogger(__name__)

ENV_PROFILE = "XINFER_PROFILE"
# CPU features that matter for inference speed (INT8 dot products, BF16, wide SIMD).
ISA_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                   "amx_int8", "amx_bf16", "asimddp", "i8mm", "bf16", "sve", "sve2")


@dataclasses.dataclass(frozen=True)
class HostInfo:
    arch: str
    cpu_model: str
    logical_cpus: int
    usable_cpus: float
    isa: tuple[str, ...]
    memory_gb: float | None

    @property
    def int8_dot_product(self) -> str | None:
        """The fastest INT8 dot-product instruction family present (what makes CPU INT8 pay off)."""
        for flag, label in (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
                            ("i8mm", "Arm I8MM"), ("asimddp", "Arm dot product")):
            if flag in self.isa:
                return label
        return None


@dataclasses.dataclass(frozen=True)
class Detection:
    profile: str
    source: str  # env | nvml | jetson | cpu
    reason: str
    gpus: tuple[str, ...]
    host: HostInfo
    evidence: dict

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["host"]["int8_dot_product"] = self.host.int8_dot_product
        return d


# ----------------------------------------------------------------------------------------------------------
# Readers (small, each replaceable in tests)
def _read_text(root: Path, rel: str) -> str | None:
    try:
        return (root / rel.lstrip("/")).read_bytes().decode("utf-8", "replace")
    except OSError:
        return None


def read_nvml_names() -> tuple[list[str] | None, str]:
    """GPU names from NVML, or (None, why not). Never raises."""
    try:
        import pynvml  # from PyPI's nvidia-ml-py
    except ImportError:
        return None, "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"NVML unavailable ({exc})"
    try:
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return names, "NVML"
    except Exception as exc:
        return None, f"NVML query failed ({exc})"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def read_host(root: str | os.PathLike[str] = "/") -> HostInfo:
    r = Path(root)
    cpuinfo = _read_text(r, "/proc/cpuinfo") or ""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    logical = os.cpu_count() or 1
    usable: float = logical
    if str(root) == "/" and hasattr(os, "sched_getaffinity"):
        usable = len(os.sched_getaffinity(0))
    quota = _read_text(r, "/sys/fs/cgroup/cpu.max")
    if quota:
        parts = quota.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                usable = min(usable, int(parts[0]) / int(parts[1]))
            except ValueError:
                pass
    mem_gb = None
    meminfo = _read_text(r, "/proc/meminfo") or ""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            mem_gb = int(line.split()[1]) * 1024 / 1e9
    limit = _read_text(r, "/sys/fs/cgroup/memory.max")
    if limit and limit.strip().isdigit() and mem_gb:
        mem_gb = min(mem_gb, int(limit.strip()) / 1e9)
    return HostInfo(arch=platform.machine(), cpu_model=model or platform.processor() or "unknown",
                    logical_cpus=logical, usable_cpus=usable,
                    isa=tuple(f for f in ISA_OF_INTEREST if f in flags),
                    memory_gb=round(mem_gb, 2) if mem_gb else None)


def read_jetson(root: str | os.PathLike[str] = "/") -> dict | None:
    """Jetson facts from the device tree and L4T release file, or None on anything else."""
    r = Path(root)
    release = _read_text(r, "/etc/nv_tegra_release")
    model = _read_text(r, "/proc/device-tree/model")
    compatible = _read_text(r, "/proc/device-tree/compatible")
    model = model.strip("\x00\n ") if model else None
    compat = [c for c in (compatible or "").split("\x00") if c]
    is_tegra = bool(release) or any(c.startswith("nvidia,tegra") for c in compat) or bool(
        model and "jetson" in model.lower())
    if not is_tegra:
        return None
    l4t = None
    if release:
        # "# R36 (release), REVISION: 4.3, GCID: ..." -> "36.4.3"
        first = release.splitlines()[0]
        try:
            major = first.split("R", 1)[1].split()[0]
            rev = first.split("REVISION:", 1)[1].split(",")[0].strip()
            l4t = f"{major}.{rev}"
        except IndexError:
            l4t = None
    soc = next((c.split(",", 1)[1] for c in reversed(compat) if c.startswith("nvidia,tegra")), None)
    return {"model": model, "soc": soc, "l4t": l4t}


# ----------------------------------------------------------------------------------------------------------
# Matching
def _norm(name: str) -> str:
    n = " ".join(name.lower().replace("_", " ").split())
    return n[len("nvidia "):] if n.startswith("nvidia ") else n


def match_nvml_name(name: str, profiles: Sequence[Profile]) -> Profile | None:
    """The profile whose ``match.nvml_names`` contains this NVML device name (case/prefix-insensitive)."""
    want = _norm(name)
    for p in profiles:
        if any(_norm(n) == want for n in p.match.nvml_names):
            return p
    # MIG or suffixed names ("NVIDIA A100-SXM4-40GB MIG 1g.5gb"): longest known name that prefixes it
    best = None
    for p in profiles:
        for n in p.match.nvml_names:
            if want.startswith(_norm(n)) and (best is None or len(n) > len(best[1])):
                best = (p, n)
    return best[0] if best else None


_SOC_CUDA = {"tegra234": "Orin", "tegra194": "Xavier"}


def match_jetson(facts: dict, profiles: Sequence[Profile], memory_gb: float | None) -> tuple[Profile | None, str]:
    jetsons = [p for p in profiles if p.kind == "jetson"]
    model = (facts.get("model") or "").lower()
    cands = [p for p in jetsons if any(pat.lower() in model for pat in p.match.device_tree)]
    how = f"device-tree model {facts.get('model')!r}"
    if not cands and facts.get("soc") in _SOC_CUDA:
        family = _SOC_CUDA[facts["soc"]]
        cands = [p for p in jetsons if family in p.match.cuda_names]
        how = f"SoC {facts['soc']} ({family})"
    if not cands:
        return None, how
    if len(cands) > 1 and memory_gb:
        cands.sort(key=lambda p: abs((p.memory_gb or 0) - memory_gb))
        how += f", memory {memory_gb:.1f} GB closest to {cands[0].memory_gb:g} GB"
    return cands[0], how


def detect(registry: ProfileRegistry | None = None, *, root: str | os.PathLike[str] = "/",
           nvml_names: list[str] | None = None, use_nvml: bool = True, use_env: bool = True) -> Detection:
    registry = registry or ProfileRegistry()
    profiles, _broken = registry.load_all()
    host = read_host(root)
    evidence: dict = {}
    if use_env and os.environ.get(ENV_PROFILE):
        name = os.environ[ENV_PROFILE]
        registry.get(name)  # raises ProfileError naming the problem
        return Detection(name, "env", f"{ENV_PROFILE}={name}", (), host, evidence)

    names, why = (nvml_names, "given") if nvml_names is not None else (
        read_nvml_names() if use_nvml else (None, "NVML not consulted"))
    evidence["nvml"] = why
    if names:
        evidence["nvml_names"] = names
        for name in names:
            prof = match_nvml_name(name, profiles)
            if prof is not None:
                more = f" (GPU 0 of {len(names)})" if len(names) > 1 else ""
                return Detection(prof.name, "nvml", f"NVML reports {name!r}{more}", tuple(names), host, evidence)
        log.info("NVML reports %s but no profile matches; trying Jetson/CPU", names)

    facts = read_jetson(root)
    if facts is not None:
        evidence["jetson"] = facts
        prof, how = match_jetson(facts, profiles, host.memory_gb)
        if prof is not None:
            l4t = f", L4T {facts['l4t']}" if facts.get("l4t") else ""
            return Detection(prof.name, "jetson", f"Jetson: {how}{l4t}", tuple(names or ()), host, evidence)

    unmatched = f"; GPU(s) {names} match no profile (add one with --profiles-dir)" if names else ""
    dot = host.int8_dot_product
    reason = (f"no NVIDIA GPU found ({why}){unmatched}; {host.usable_cpus:g} usable CPU(s), {host.cpu_model}"
              + (f", INT8 via {dot}" if dot else ", no INT8 dot-product instructions"))
    return Detection("cpu", "cpu", reason, tuple(names or ()), host, evidence)
