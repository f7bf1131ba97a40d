"""The one small interface every inference engine implements.

A backend is a thin runner with a lifecycle (as Polygraphy's runners): the batching core creates one
instance per worker (``device_concurrency``), calls ``activate()`` once in that worker, ``infer()`` per
batch, ``deactivate()`` at close. Backends never queue, batch, or start threads: the batching core owns
all of that. Inputs and outputs are ``dict[str, numpy.ndarray]`` with the batch on axis 0.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ...bundle import Bundle
from ...errors import UserError
from ...profiles import Profile

log = logging.getLogger(__name__)

_DEVICE = re.compile(r"(?:(cpu)|(cuda|gpu|rocm|hip)(?::(\d+))?)", re.IGNORECASE)
#: device kinds a normalized device string starts with
DEVICE_KINDS = ("cpu", "cuda", "rocm")


def normalize_device(device: str) -> str:
    """The one spelling every backend sees: 'cpu', 'cuda:N' (NVIDIA) or 'rocm:N' (AMD, the HIP device index).

    Accepted: 'cuda', 'gpu', 'gpu:N', 'CUDA:1' (-> 'cuda:N'); 'rocm', 'hip', 'hip:N', 'ROCm:1' (-> 'rocm:N').
    """
    m = _DEVICE.fullmatch(str(device).strip())
    if m is None:
        nearest = _nearest_device(str(device))
        raise UserError(f"device {device!r} is not understood; expected 'cpu', 'cuda' or 'cuda:N' (NVIDIA, e.g. "
                        "'cuda:1'), 'rocm' or 'rocm:N' (AMD, also spelt 'hip:N')"
                        + (f"; did you mean {nearest!r}?" if nearest else ""))
    if m.group(1):
        return "cpu"
    kind = "rocm" if m.group(2).lower() in ("rocm", "hip") else "cuda"
    return f"{kind}:{int(m.group(3) or 0)}"


def _nearest_device(device: str) -> str | None:
    """The accepted spelling closest to an unknown one ('tpu:1' -> 'cuda:1', 'rocm1' -> 'rocm:1'), or None."""
    m = re.fullmatch(r"\s*([A-Za-z]+)\W*(\d+)?\s*", device)
    if m is None:
        return None
    names = {"cpu": "cpu", "cuda": "cuda", "gpu": "cuda", "rocm": "rocm", "hip": "rocm", "amd": "rocm",
             "nvidia": "cuda"}
    close = difflib.get_close_matches(m.group(1).lower(), list(names), n=1, cutoff=0.5)
    if not close:
        return None
    kind = names[close[0]]
    return kind if kind == "cpu" else f"{kind}:{int(m.group(2) or 0)}"


def device_kind(device: str) -> str:
    """'cpu', 'cuda' or 'rocm' for any accepted device spelling."""
    return normalize_device(device).partition(":")[0]


class Backend:
    #: registry name used in ``backend=`` and profile ``backends:`` lists
    name: ClassVar[str] = ""
    #: pip extra that installs what this backend needs
    extra: ClassVar[str] = ""
    #: device kinds (``device_kind``) this backend can run on; the selection skips it for any other
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    def __init__(self, bundle: Bundle, *, profile: Profile, device: str = "cpu", threads: int | None = None,
                 options: Mapping[str, Any] | None = None):
        self.bundle = bundle
        self.profile = profile
        self.device = normalize_device(device)
        self.threads = threads
        self.options = dict(options or {})
        self.active = False

    # -- selection -------------------------------------------------------------------------------------
    @classmethod
    def unavailable_reason(cls, bundle: Bundle, profile: Profile, device: str) -> str | None:
        """None when this backend can run this bundle here; otherwise why not (cheap: no session is made)."""
        raise NotImplementedError

    # -- lifecycle -------------------------------------------------------------------------------------
    def activate(self) -> None:
        if not self.active:
            self.activate_impl()
            self.active = True

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.infer_impl(feeds)

    def deactivate(self) -> None:
        if self.active:
            try:
                self.deactivate_impl()
            finally:
                self.active = False

    def __enter__(self) -> Backend:
        self.activate()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "threads": self.threads}

    # -- for subclasses --------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        raise NotImplementedError

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        pass
