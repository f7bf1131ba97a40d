"""GPU readers for detection (NVML, amdsmi) and the CUDA <-> NVML index mapping.

NVML numbers GPUs in PCI bus order. CUDA numbers them fastest first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, and
only over the GPUs ``CUDA_VISIBLE_DEVICES`` leaves visible, in the order it lists them (indices or ``GPU-``/``MIG-``
UUIDs, a unique UUID prefix is enough; the list stops at the first entry that names no GPU). Both readers import
their package on first use and never raise: no package, no library or no driver is "no GPU of that vendor".
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Gpu:
    index: int                       # NVML index (PCI bus order); the amdsmi handle order for AMD
    name: str                        # nvmlDeviceGetName / amdsmi market_name
    uuid: str | None = None          # "GPU-8932f937-..." (nvmlDeviceGetUUID)
    mig_uuids: tuple[str, ...] = ()  # "MIG-..." UUIDs of the MIG devices on this GPU
    vendor: str = "nvidia"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_nvml_gpus() -> tuple[list[Gpu] | None, str]:
    """Every GPU NVML sees, in NVML index order, or (None, why not). Never raises."""
    try:
        import pynvml  # from PyPI's nvidia-ml-py
    except ImportError:
        return None, "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"NVML unavailable ({exc})"
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            gpus.append(Gpu(i, _text(pynvml.nvmlDeviceGetName(h)), _optional(pynvml.nvmlDeviceGetUUID, h),
                            _mig_uuids(pynvml, h)))
        return gpus, "NVML"
    except Exception as exc:
        return None, f"NVML query failed ({exc})"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _optional(fn, *args) -> str | None:
    try:
        return _text(fn(*args))
    except Exception:  # NVMLError_NotSupported and friends
        return None


def _mig_uuids(pynvml, handle) -> tuple[str, ...]:
    try:
        count = pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)
    except Exception:  # no MIG on this GPU, or an old driver
        return ()
    out = []
    for j in range(count):
        try:
            out.append(_text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j))))
        except Exception:  # NVMLError_NotFound: no MIG device in that slot
            continue
    return tuple(out)


def read_amd_gpus() -> tuple[list[Gpu] | None, str]:
    """AMD GPUs by market name from amdsmi (PyPI ``amdsmi``, needs ROCm's libamd_smi), or (None, why not)."""
    try:
        import amdsmi
    except Exception:  # ImportError, or the package is there but libamd_smi.so is not (OSError/KeyError)
        return None, "amdsmi is not installed"
    try:
        amdsmi.amdsmi_init()  # AmdSmiInitFlags.INIT_AMD_GPUS by default
    except Exception as exc:  # AmdSmiLibraryException: no amdgpu driver
        return None, f"amdsmi unavailable ({exc})"
    try:
        gpus = []
        for i, h in enumerate(amdsmi.amdsmi_get_processor_handles()):
            info = amdsmi.amdsmi_get_gpu_asic_info(h)
            gpus.append(Gpu(i, str(info.get("market_name") or "").strip(), vendor="amd"))
        return gpus, "amdsmi"
    except Exception as exc:
        return None, f"amdsmi query failed ({exc})"
    finally:
        try:
            amdsmi.amdsmi_shut_down()
        except Exception:
            pass


# ----------------------------------------------------------------------------------------------------------
# CUDA_VISIBLE_DEVICES
@dataclasses.dataclass(frozen=True)
class CudaView:
    """The GPUs this process's CUDA sees: ``nvml[c]`` is the NVML index of CUDA device ``c``."""

    nvml: tuple[int, ...]
    exact: bool   # False when CUDA's fastest-first order may differ from NVML's PCI order on this host
    note: str


def _resolve(token: str, gpus: Sequence[Gpu], by_position: bool) -> int | None:
    """NVML index named by one CUDA_VISIBLE_DEVICES entry, or None when it names no single GPU."""
    t = token.strip()
    if not t:
        return None
    if t.lstrip("-").isdigit():
        i = int(t)
        return gpus[i].index if by_position and 0 <= i < len(gpus) else None
    low = t.lower()
    if low.startswith("mig-gpu-"):  # pre-R470 form MIG-<GPU-UUID>/<gi>/<ci>
        low = low[len("mig-"):].split("/")[0]
    if low.startswith("gpu-"):
        hits = [g.index for g in gpus if g.uuid and g.uuid.lower().startswith(low)]
    elif low.startswith("mig-"):
        hits = [g.index for g in gpus if any(u.lower().startswith(low) for u in g.mig_uuids)]
    else:
        hits = []
    return hits[0] if len(hits) == 1 else None


def cuda_view(gpus: Sequence[Gpu], env: Mapping[str, str] | None = None) -> CudaView:
    """Which NVML GPUs CUDA numbers 0, 1, ... in this process (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER)."""
    env = os.environ if env is None else env
    ordered = sorted(gpus, key=lambda g: g.index)
    pci = env.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST").strip().upper() == "PCI_BUS_ID"
    same = len({g.name for g in ordered}) <= 1
    exact = pci or same
    why = "" if exact else ("; CUDA numbers the fastest GPU first on this mixed host, so CUDA and NVML indexes may "
                            "differ: set CUDA_DEVICE_ORDER=PCI_BUS_ID to make them agree")
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return CudaView(tuple(g.index for g in ordered), exact, "all GPUs visible" + why)
    picked: list[int] = []
    for token in visible.split(","):
        idx = _resolve(token, ordered, by_position=True)
        if idx is None:  # CUDA stops at the first entry that names no GPU
            break
        if idx not in picked:
            picked.append(idx)
    # integer entries count in CUDA's order; UUIDs are exact whatever the order
    exact = exact or all(not t.strip().lstrip("-").isdigit() for t in visible.split(",") if t.strip())
    return CudaView(tuple(picked), exact, f"CUDA_VISIBLE_DEVICES={visible}" + ("" if exact else why))


def cuda_to_nvml(cuda_index: int, gpus: Sequence[Gpu], env: Mapping[str, str] | None = None) -> int | None:
    view = cuda_view(gpus, env)
    if not view.exact or not 0 <= cuda_index < len(view.nvml):
        return None
    return view.nvml[cuda_index]
