"""Pick the backend: an explicit ``backend=``, else the profile's order intersected with what works here."""

from __future__ import annotations

import importlib
import logging

from ...bundle import Bundle
from ...errors import BackendUnavailable, UserError
from ...profiles import Profile
from .base import Backend, device_kind

log = logging.getLogger(__name__)

# name -> "module:class"; imported only when considered, so a missing engine never breaks the others.
REGISTRY = {
    "onnxruntime": ("xinfer_sdk.runtime.backends.onnxruntime:OnnxRuntimeBackend", "cpu"),
    "tensorrt": ("xinfer_sdk.runtime.backends.tensorrt:TensorRTBackend", "tensorrt"),
    "torch": ("xinfer_sdk.runtime.backends.torch:TorchBackend", "torch"),
    # no extra: onnxruntime-migraphx ships the same `onnxruntime` module as onnxruntime (the reason says so)
    "migraphx": ("xinfer_sdk.runtime.backends.migraphx:MIGraphXBackend", ""),
}
ALIASES = {"ort": "onnxruntime", "trt": "tensorrt", "pytorch": "torch", "mgx": "migraphx"}


def unavailable_reason(cls: type[Backend], bundle: Bundle, profile: Profile, device: str) -> str | None:
    """The backend's own reason, after the device-kind check every backend shares (no silent CPU run of a GPU
    device by a backend that does not know that kind of GPU)."""
    kind = device_kind(device)
    if kind not in cls.devices:
        return f"it runs on {' / '.join(cls.devices)} devices, not {device}"
    return cls.unavailable_reason(bundle, profile, device)


def backend_class(name: str) -> type[Backend]:
    target, extra = REGISTRY[name]
    module, cls = target.split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise BackendUnavailable(name, f"its module cannot be imported ({exc})", extra=extra) from exc


def choose(bundle: Bundle, profile: Profile, device: str, requested: str = "auto", *,
           exclude: dict[str, str] | None = None) -> tuple[type[Backend], str, dict]:
    """Returns (backend class, why it was chosen, {skipped backend: why}).

    ``exclude``: backends already found unusable ({name: why}), e.g. one whose activation failed under "auto".
    """
    requested = ALIASES.get(requested, requested or "auto")
    if requested != "auto":
        if requested not in REGISTRY:
            raise UserError(f"unknown backend {requested!r}; expected auto or one of {', '.join(REGISTRY)}")
        cls = backend_class(requested)
        if device_kind(device) not in cls.devices:  # the device is the problem, not a missing package
            raise BackendUnavailable(requested, f"it runs on {' / '.join(cls.devices)} devices, not {device}; "
                                                f"pass device={' or '.join(repr(k) for k in cls.devices)} (':N' "
                                                "for another GPU) or leave backend='auto'")
        reason = cls.unavailable_reason(bundle, profile, device)
        if reason:
            # no generic "install the extra" hint: the reason names the package when one is missing, and
            # says the real cause otherwise (e.g. torch is installed but the bundle holds no TorchScript)
            raise BackendUnavailable(requested, reason)
        return cls, f"backend={requested!r} was requested", {}
    skipped: dict[str, str] = dict(exclude or {})
    order = list(profile.backends) + [b for b in REGISTRY if b not in profile.backends]
    for name in order:
        if name in skipped:
            continue
        try:
            cls = backend_class(name)
        except BackendUnavailable as exc:
            skipped[name] = exc.message
            continue
        reason = unavailable_reason(cls, bundle, profile, device)
        if reason is None:
            pos = "first" if not skipped else "next"
            why = f"{pos} usable backend in profile '{profile.name}' order {list(profile.backends)}"
            if skipped:
                why += "; skipped " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
            return cls, why, skipped
        skipped[name] = reason
    detail = "; ".join(f"{k}: {v}" for k, v in skipped.items())
    # on a GPU the reasons name what to install ([gpu], [tensorrt], onnxruntime-migraphx); only a CPU run is
    # fixed by the [cpu] extra
    extra = "cpu" if device_kind(device) == "cpu" else None
    raise BackendUnavailable("auto", f"no backend can run bundle '{bundle.name}' on {device}: {detail}", extra=extra)
