"""Which profile fits this machine, and why.

Order: ``XINFER_PROFILE`` (explicit) -> NVML device name (nvidia-ml-py), the GPU CUDA device 0 of this process
first -> AMD market name (amdsmi) -> Jetson (``/etc/nv_tegra_release``, ``/proc/device-tree/model``,
``/proc/device-tree/compatible``) -> ``cpu``. A name matches only a profile that lists it (a MIG device its
parent's), never a profile whose name is a prefix of it. No GPU, no NVML/amdsmi library, or no Jetson files
simply means ``cpu``, quietly. Every reader takes a ``root`` or the names so tests can replay recorded machines.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._devices import Gpu, cuda_to_nvml, cuda_view, read_amd_gpus, read_nvml_gpus
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
    gpu_index: int | None = None   # NVML (or amdsmi) index of the GPU that matched
    cuda_index: int | None = None  # its CUDA device number in this process, when visible and known

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
    """GPU names from NVML in NVML index order, or (None, why not). Never raises."""
    gpus, why = read_nvml_gpus()
    return (None if gpus is None else [g.name for g in gpus]), why


def cuda_to_nvml_index(cuda_index: int, *, gpus: Sequence[Gpu] | None = None,
                       env: Mapping[str, str] | None = None) -> int | None:
    """The NVML index of CUDA device ``cuda_index`` in this process, or None when it cannot be known.

    Honours CUDA_VISIBLE_DEVICES (indices, ``GPU-``/``MIG-`` UUIDs or their prefixes). NVML numbers GPUs in PCI bus
    order; CUDA does too only with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (or on a host whose GPUs are all the same model),
    else the answer is None rather than a guess. ``gpus`` defaults to a fresh NVML read.
    """
    if gpus is None:
        gpus, _ = read_nvml_gpus()
        if not gpus:
            return None
    return cuda_to_nvml(cuda_index, gpus, env)


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
_MIG_SUFFIX = re.compile(r" mig \S+$")        # "NVIDIA A100-SXM4-80GB MIG 1g.10gb": a MIG device of that GPU
_AMD_SUFFIX = re.compile(r" (oam|vf)$")       # form factor / SR-IOV virtual function of the same GPU


def _norm(name: str) -> str:
    n = " ".join(name.lower().replace("_", " ").split())
    return n[len("nvidia "):] if n.startswith("nvidia ") else n


def _lookup(wanted: Sequence[str], profiles: Sequence[Profile], key: str) -> Profile | None:
    for want in dict.fromkeys(wanted):
        for p in profiles:
            if any(_norm(n) == want for n in getattr(p.match, key)):
                return p
    return None


def match_nvml_name(name: str, profiles: Sequence[Profile]) -> Profile | None:
    """The profile whose ``match.nvml_names`` lists this NVML name (case, spacing and 'NVIDIA ' ignored).

    A MIG device ('... MIG 1g.5gb') takes its parent GPU's profile. Nothing else is a prefix match: 'NVIDIA
    A100-SXM4-40GB' is not an 'NVIDIA A10', 'NVIDIA L40S' not an 'NVIDIA L4', 'NVIDIA H200 NVL' not an 'NVIDIA H200';
    a GPU no profile lists gets None, never a neighbour's profile.
    """
    want = _norm(name)
    return _lookup([want, _MIG_SUFFIX.sub("", want)], profiles, "nvml_names")


def match_amd_name(name: str, profiles: Sequence[Profile]) -> Profile | None:
    """The profile whose ``match.amd_product_names`` lists this amdsmi market name (an 'OAM'/'VF' suffix ignored)."""
    want = _norm(name)
    return _lookup([want, _AMD_SUFFIX.sub("", want)], profiles, "amd_product_names")


_SOC_CUDA = {"tegra264": "Thor", "tegra234": "Orin", "tegra194": "Xavier"}


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
           nvml_names: list[str] | None = None, nvml_uuids: list[str] | None = None,
           amd_names: list[str] | None = None, use_nvml: bool = True, use_amd: bool = True,
           use_env: bool = True, env: Mapping[str, str] | None = None) -> Detection:
    """Which profile fits this machine, and why. ``nvml_names``/``amd_names`` replay a machine (tests)."""
    registry = registry or ProfileRegistry()
    env = os.environ if env is None else env
    profiles, _broken = registry.load_all()
    host = read_host(root)
    evidence: dict = {}
    if use_env and env.get(ENV_PROFILE):
        name = env[ENV_PROFILE]
        registry.get(name)  # raises ProfileError naming the problem
        return Detection(name, "env", f"{ENV_PROFILE}={name}", (), host, evidence)

    if nvml_names is not None:
        uuids = list(nvml_uuids or []) + [None] * len(nvml_names)
        gpus, why = [Gpu(i, n, uuids[i]) for i, n in enumerate(nvml_names)], "given"
    else:
        gpus, why = read_nvml_gpus() if use_nvml else (None, "NVML not consulted")
    evidence["nvml"] = why
    names = [g.name for g in gpus or ()]
    unmatched: list[str] = []
    if gpus:
        evidence["nvml_names"] = names
        found = _pick_nvidia(gpus, profiles, env, evidence)
        if found is not None:
            prof, gpu, cuda, text = found
            if prof.kind == "jetson":  # one SoC name ('NVIDIA Thor') covers several modules: the device tree decides
                facts = read_jetson(root)
                better, how = match_jetson(facts, profiles, host.memory_gb) if facts else (None, "")
                if better is not None:
                    evidence["jetson"] = facts
                    return Detection(better.name, "jetson", f"Jetson: {how}; {text}", tuple(names), host, evidence,
                                     gpu.index, cuda)
            return Detection(prof.name, "nvml", text, tuple(names), host, evidence, gpu.index, cuda)
        unmatched += names
        log.info("NVML reports %s but no profile matches; trying AMD/Jetson/CPU", names)

    if amd_names is not None:
        amd, amd_why = [Gpu(i, n, vendor="amd") for i, n in enumerate(amd_names)], "given"
    else:
        amd, amd_why = read_amd_gpus() if use_amd else (None, "amdsmi not consulted")
    evidence["amdsmi"] = amd_why
    if amd:
        evidence["amd_names"] = [g.name for g in amd]
        for g in amd:
            prof = match_amd_name(g.name, profiles)
            if prof is not None:
                more = f" (GPU {g.index} of {len(amd)})" if len(amd) > 1 else ""
                return Detection(prof.name, "amdsmi", f"amdsmi reports {g.name!r}{more}",
                                 tuple(x.name for x in amd), host, evidence, g.index)
        unmatched += [g.name for g in amd]

    facts = read_jetson(root)
    if facts is not None:
        evidence["jetson"] = facts
        prof, how = match_jetson(facts, profiles, host.memory_gb)
        if prof is not None:
            l4t = f", L4T {facts['l4t']}" if facts.get("l4t") else ""
            return Detection(prof.name, "jetson", f"Jetson: {how}{l4t}", tuple(names), host, evidence)

    if unmatched:
        listed = ", ".join(repr(n) for n in dict.fromkeys(unmatched))
        found_text = (f"found GPU {listed} but no profile matches it (add one with --profiles-dir, see "
                      "docs/profiles.md); using cpu")
    else:
        found_text = f"no NVIDIA GPU found ({why})" + ("" if amd_why.startswith("amdsmi is not") else
                                                       f", no AMD GPU found ({amd_why})")
    dot = host.int8_dot_product
    reason = (f"{found_text}; {host.usable_cpus:g} usable CPU(s), {host.cpu_model}"
              + (f", INT8 via {dot}" if dot else ", no INT8 dot-product instructions"))
    return Detection("cpu", "cpu", reason, tuple(names), host, evidence)


def _pick_nvidia(gpus: Sequence[Gpu], profiles: Sequence[Profile], env: Mapping[str, str],
                 evidence: dict) -> tuple[Profile, Gpu, int | None, str] | None:
    """The GPU this process will use (CUDA device 0) if a profile fits it, else the next visible, else any."""
    view = cuda_view(gpus, env)
    by_index = {g.index: g for g in gpus}
    order = [i for i in view.nvml if i in by_index] + [g.index for g in gpus if g.index not in view.nvml]
    matches = {g.index: match_nvml_name(g.name, profiles) for g in gpus}
    evidence["gpus"] = [{"nvml_index": g.index, "name": g.name, "uuid": g.uuid,
                         "cuda_index": view.nvml.index(g.index) if g.index in view.nvml else None,
                         "profile": matches[g.index].name if matches[g.index] else None} for g in gpus]
    evidence["cuda_order"] = view.note
    for i in order:
        prof = matches[i]
        if prof is None:
            continue
        gpu = by_index[i]
        cuda = view.nvml.index(i) if i in view.nvml else None
        if len(gpus) == 1 and "CUDA_VISIBLE_DEVICES" not in env:
            return prof, gpu, cuda, f"NVML reports {gpu.name!r}"
        if cuda is None:
            where = f"not visible to this process ({view.note})"
        else:
            where = f"CUDA device {cuda}" + ("" if view.exact else " if CUDA orders by PCI bus") + f"; {view.note}"
        text = f"NVML reports {gpu.name!r} (GPU {i} of {len(gpus)} by NVML index, {where})"
        others = sorted({m.name for j, m in matches.items() if m is not None and m.name != prof.name})
        if others:
            text += f"; other GPUs here match {', '.join(others)}"
        return prof, gpu, cuda, text
    return None
