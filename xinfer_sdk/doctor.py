"""`xinfer-sdk doctor`: what is installed, which engines and providers really work here, and any clash.

Providers are read from a session that was really created (``InferenceSession.get_providers()``), not from
``onnxruntime.get_available_providers()``, which lists CUDA/TensorRT on a GPU build even without a GPU.

The GPU stack (``gpu_stack``): the driver (NVML ``nvmlSystemGetDriverVersion`` and the CUDA version it supports,
``nvmlSystemGetCudaDriverVersion``, else ``cudaDriverGetVersion``), the CUDA runtime cuda-python carries
(``cudaRuntimeGetVersion``), the cuda-python/cuda-bindings, TensorRT and ONNX Runtime versions and the CUDA
major each package was built for. ``stack_problems`` (a pure function of those facts) names every mismatch and
its fix: a CUDA 13 package (cuda-python 13, tensorrt-cu13, onnxruntime-gpu 1.27+) on a driver older than R580,
TensorRT 11 on JetPack 6, packages of two CUDA majors in one process.
"""

from __future__ import annotations

import base64
import importlib
import importlib.metadata as md
import logging
import platform
import sys
from typing import Any

from ._version import __version__
from .accel.nvidia import _cudart

log = logging.getLogger(__name__)

# A 81-byte ONNX graph (Identity on float[1], opset 13) used to probe which providers really start.
_PROBE_ONNX = base64.b64decode(
    "CAcSCnhpbmZlci1zZGs6OwoQCgF4EgF5IghJZGVudGl0eRIFcHJvYmVaDwoBeBIKCggIARIECgIIAWIPCgF5EgoKCAgBEgQKAggBQgQKABAN")

DISTRIBUTIONS = (
    "numpy", "pyyaml", "onnx", "onnxslim", "onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino",
    "onnxruntime-directml", "onnxruntime-training", "torch", "tensorrt", "tensorrt-cu12", "tensorrt-cu13",
    "cuda-python", "cuda-bindings", "nvidia-ml-py", "pynvml", "click", "rich", "prometheus-client", "httptools",
    "grpcio", "protobuf", "tritonclient", "tensorflow", "tensorflow-cpu", "tf2onnx",
)
# Distributions that all install the one `onnxruntime` import folder and overwrite each other.
ORT_FLAVOURS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
                "onnxruntime-training")


def installed() -> dict[str, str]:
    out = {}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def ort_providers() -> dict[str, Any]:
    """Providers the installed onnxruntime lists, and those a created session really uses."""
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError as exc:
        return {"importable": False, "error": str(exc), "listed": [], "working": []}
    listed = list(ort.get_available_providers())
    working = []
    errors = {}
    so = ort.SessionOptions()
    so.log_severity_level = 4  # silence ORT's own fallback warnings during the probe
    for prov in listed:
        try:
            chain = [prov] if prov == "CPUExecutionProvider" else [prov, "CPUExecutionProvider"]
            sess = ort.InferenceSession(_PROBE_ONNX, so, providers=chain)
            if prov in sess.get_providers():
                working.append(prov)
            else:
                errors[prov] = "session fell back to CPU (no usable device or libraries)"
        except Exception as exc:  # provider libraries missing, no device, ...
            errors[prov] = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return {"importable": True, "version": ort.__version__, "listed": listed, "working": working,
            "not_working": errors}


def _try(fn) -> tuple[bool, str]:
    try:
        return True, fn()
    except Exception as exc:
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()


def backends(providers: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if providers.get("importable"):
        ok = "CPUExecutionProvider" in providers["working"]
        out["onnxruntime"] = {"ok": ok, "detail": ", ".join(providers["working"]) or "no working provider",
                              "extra": "cpu"}
    else:
        out["onnxruntime"] = {"ok": False, "detail": providers.get("error", "not installed"), "extra": "cpu"}

    def trt():
        trt_mod = importlib.import_module("tensorrt")
        count, why = _cudart.device_status(_cudart.load())
        if not count:
            raise RuntimeError(f"TensorRT {trt_mod.__version__} imports but {why}")
        return f"TensorRT {trt_mod.__version__}, {count} CUDA device(s)"

    ok, detail = _try(trt)
    out["tensorrt"] = {"ok": ok, "detail": detail, "extra": "tensorrt"}

    def torch_():
        torch = importlib.import_module("torch")
        cuda = torch.cuda.is_available()
        return f"torch {torch.__version__}, CUDA {'available' if cuda else 'not available (CPU only)'}"

    ok, detail = _try(torch_)
    out["torch"] = {"ok": ok, "detail": detail, "extra": "torch"}
    return out


def problems(dists: dict[str, str], providers: dict[str, Any]) -> list[str]:
    found = []
    flavours = [d for d in ORT_FLAVOURS if d in dists]
    if len(flavours) > 1:
        found.append(f"{' and '.join(flavours)} are all installed: they share the one 'onnxruntime' folder and "
                     "overwrite each other. Keep exactly one: pip uninstall -y " + " ".join(flavours)
                     + f" && pip install {flavours[-1]}")
    if "pynvml" in dists and "nvidia-ml-py" not in dists:
        found.append("the 'pynvml' distribution is a deprecated wrapper; install 'nvidia-ml-py' (it provides "
                     "the pynvml module)")
    listed, working = set(providers.get("listed", [])), set(providers.get("working", []))
    for prov in sorted(listed - working):
        if prov in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            found.append(f"onnxruntime lists {prov} but a session could not use it (no GPU / CUDA libraries here)")
    return found


# ----------------------------------------------------------------------------------------------------------
# The GPU stack: facts, then the pure mismatch rules
CUDA13_DRIVER = "R580"  # first driver branch for CUDA 13.0 (CUDA 12.x needs R525+; we document R535+)
CUDA12_EXTRAS = "pip install 'xinfer-sdk[tensorrt]' / 'xinfer-sdk[gpu]' (CUDA 12 stack)"


def ort_cuda_major(dist: str | None, version: str | None, built_with: str | None = None) -> int | None:
    """The CUDA major an onnxruntime build needs: its recorded build CUDA version, else (PyPI's onnxruntime-gpu)
    1.27+ -> 13, 1.19-1.26 -> 12, older -> 11 (from the wheels' ``nvidia-*-cu1x`` requirements). None: no CUDA."""
    if built_with:
        try:
            return int(str(built_with).split(".")[0])
        except ValueError:
            pass
    if dist != "onnxruntime-gpu" or not version:
        return None
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    return 13 if parts >= (1, 27) else 12 if parts >= (1, 19) else 11


def tensorrt_cuda_major(dists: dict[str, str]) -> int | None:
    """CUDA major of the pip TensorRT wheels (tensorrt-cu12 / tensorrt-cu13); None for JetPack's or none."""
    for major in (13, 12, 11):
        if f"tensorrt-cu{major}" in dists:
            return major
    return None


def _major(version: str | None) -> int | None:
    try:
        return int(str(version).split(".")[0]) if version else None
    except ValueError:
        return None


def gpu_stack(dists: dict[str, str], providers: dict[str, Any]) -> dict[str, Any]:
    """What the GPU stack here is made of. Each probe is guarded: a missing piece is None, never an error."""
    facts: dict[str, Any] = {
        "driver": None, "driver_cuda": None, "cuda_runtime": None,
        "cuda_python": dists.get("cuda-bindings") or dists.get("cuda-python"),
        "cuda_devices": None, "cuda_reason": None,
        "tensorrt": None, "tensorrt_cuda": tensorrt_cuda_major(dists),
        "onnxruntime": providers.get("version"), "onnxruntime_cuda": None, "jetson": None,
    }
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            drv = pynvml.nvmlSystemGetDriverVersion()
            facts["driver"] = drv.decode() if isinstance(drv, bytes) else str(drv)
            facts["driver_cuda"] = int(pynvml.nvmlSystemGetCudaDriverVersion())
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # no nvidia-ml-py, no driver
        log.debug("NVML: %s", exc)
    try:
        cudart = _cudart.load()
        vers = _cudart.versions(cudart)
        facts["cuda_runtime"] = vers["runtime"]
        facts["driver_cuda"] = facts["driver_cuda"] or vers["driver"] or None
        facts["cuda_devices"], facts["cuda_reason"] = _cudart.device_status(cudart)
    except Exception as exc:  # cuda-python not installed
        log.debug("cuda-python: %s", exc)
    try:
        facts["tensorrt"] = str(importlib.import_module("tensorrt").__version__)
    except Exception as exc:
        log.debug("tensorrt: %s", exc)
    flavour = next((d for d in ORT_FLAVOURS if d in dists), None)
    built_with = None
    try:
        info = importlib.import_module("onnxruntime.capi.build_and_package_info")
        built_with = getattr(info, "cuda_version", None)
    except Exception:
        pass
    facts["onnxruntime_cuda"] = ort_cuda_major(flavour, facts["onnxruntime"] or dists.get(flavour or ""), built_with)
    try:
        from .profiles.detect import read_jetson

        facts["jetson"] = read_jetson()
    except Exception as exc:
        log.debug("jetson: %s", exc)
    return facts


def stack_problems(f: dict[str, Any]) -> list[str]:
    """Every mismatch in the GPU stack facts (see ``gpu_stack``), each with its fix. Pure: no probing here."""
    found: list[str] = []
    drv_cuda = f.get("driver_cuda") or 0
    drv_major = drv_cuda // 1000 if drv_cuda else None
    drv = f"driver {f['driver']}" if f.get("driver") else "the driver"
    drv_text = f"{drv} supports CUDA {_cudart.cuda_version_text(drv_cuda)}"
    upgrade = f"or upgrade the NVIDIA driver to {CUDA13_DRIVER}+"
    majors: dict[str, int] = {}
    too_new: list[str] = []
    cp_major = _major(f.get("cuda_python"))
    if cp_major:
        majors[f"cuda-python {f['cuda_python']}"] = cp_major
    if f.get("tensorrt_cuda"):
        majors[f"tensorrt-cu{f['tensorrt_cuda']} {f.get('tensorrt') or ''}".strip()] = f["tensorrt_cuda"]
    if f.get("onnxruntime_cuda"):
        majors[f"onnxruntime-gpu {f.get('onnxruntime') or ''} (CUDA {f['onnxruntime_cuda']} build)"] = \
            f["onnxruntime_cuda"]
    if drv_major:
        for what, major in majors.items():
            if major <= drv_major:
                continue
            if what.startswith("cuda-python"):
                fix = "pip install 'cuda-python>=12.6.1,<13'"
            elif what.startswith("tensorrt"):
                fix = f"pip uninstall -y tensorrt tensorrt-cu{major} && pip install 'tensorrt-cu12>=10,<11'"
            else:
                fix = "pip install 'onnxruntime-gpu>=1.19,<1.27'"
            too_new.append(what)
            found.append(f"{what} needs a CUDA {major} driver but {drv_text}: {fix} ({CUDA12_EXTRAS}), {upgrade}")
    elif len(set(majors.values())) > 1:
        listing = ", ".join(f"{w} (CUDA {m})" for w, m in majors.items())
        found.append(f"packages of two CUDA majors in one process: {listing}; they need an {CUDA13_DRIVER}+ driver "
                     f"together. Keep one stack: {CUDA12_EXTRAS}, or [tensorrt-cu13]/[gpu-cu13] (CUDA 13)")
    jetson = f.get("jetson")
    trt_major = _major(f.get("tensorrt"))
    if jetson and trt_major and trt_major >= 11:
        l4t = _major((jetson or {}).get("l4t"))
        if l4t is None or l4t < 38:
            found.append(f"TensorRT {f['tensorrt']} on a Jetson with L4T {jetson.get('l4t') or '?'}: JetPack 6 "
                         "(L4T R36) ships TensorRT 10.3 and TensorRT 11 does not support it; pip uninstall the "
                         "tensorrt wheels and use JetPack's TensorRT (apt: python3-libnvinfer)")
    if f.get("cuda_python") and drv_cuda and f.get("cuda_devices") == 0 and f.get("cuda_reason") and \
            not any(w.startswith("cuda-python") for w in too_new):
        found.append(f"cuda-python finds no GPU: {f['cuda_reason']}")
    return found


def collect(*, detect_profile: bool = True) -> dict[str, Any]:
    dists = installed()
    providers = ort_providers()
    stack = gpu_stack(dists, providers)
    report: dict[str, Any] = {
        "xinfer_sdk": __version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "packages": dists,
        "onnxruntime": providers,
        "gpu": {**stack, "driver_cuda": _cudart.cuda_version_text(stack["driver_cuda"]) if stack["driver_cuda"]
                else None, "cuda_runtime": _cudart.cuda_version_text(stack["cuda_runtime"])
                if stack["cuda_runtime"] else None},
        "backends": backends(providers),
        "problems": problems(dists, providers) + stack_problems(stack),
    }
    if detect_profile:
        from .profiles import detect

        try:
            report["profile"] = detect().to_dict()
        except Exception as exc:  # a broken user profile must not hide the rest of the report
            report["profile"] = {"error": str(exc)}
    return report
