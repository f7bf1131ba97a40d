"""`xinfer-sdk doctor`: what is installed, which engines and providers really work here, and any clash.

Providers are read from a session that was really created (``InferenceSession.get_providers()``), not from
``onnxruntime.get_available_providers()``, which lists CUDA/TensorRT on a GPU build even without a GPU.
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
        from cuda.bindings import runtime as cudart  # noqa: F401  (cuda-python >= 12.6 layout)
        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0 or count == 0:
            raise RuntimeError(f"TensorRT {trt_mod.__version__} imports but no CUDA device is visible")
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


def collect(*, detect_profile: bool = True) -> dict[str, Any]:
    dists = installed()
    providers = ort_providers()
    report: dict[str, Any] = {
        "xinfer_sdk": __version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "packages": dists,
        "onnxruntime": providers,
        "backends": backends(providers),
        "problems": problems(dists, providers),
    }
    if detect_profile:
        from .profiles import detect

        try:
            report["profile"] = detect().to_dict()
        except Exception as exc:  # a broken user profile must not hide the rest of the report
            report["profile"] = {"error": str(exc)}
    return report
