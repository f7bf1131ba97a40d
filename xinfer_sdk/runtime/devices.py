"""Several devices per model (Triton's instance groups): parse ``device=``, place workers, count per device.

``device`` may name one device ('cuda:1'), a list ('cuda:0,1,2,3', 'cuda:0,cuda:2', ['cuda:0', 'cuda:1']), every
visible GPU ('all'), or CPU pseudo-devices ('cpu:0,cpu:1': separate worker groups on the CPU, for tests and for
NUMA-style splits). The model keeps ONE queue; the batching core runs ``device_concurrency`` workers on EACH
device, and worker ``i`` runs on ``devices[i // device_concurrency]``.

Every worker's backend is wrapped in a ``Placed`` backend that counts the batches, samples and compute time of its
device (``Model.device_stats()``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UserError
from .backends.base import Backend, normalize_device

_perf = time.perf_counter


def parse_devices(device: str | Sequence[str]) -> list[str]:
    """The devices of one ``device=`` value, normalized ('cpu:N' kept as a CPU pseudo-device). Raises UserError."""
    if isinstance(device, (list, tuple)):
        parts = [str(d) for d in device]
    else:
        text = str(device).strip()
        if text.lower() == "all":
            return all_gpus()
        parts = [p for p in text.split(",")]
    if not parts or any(not p.strip() for p in parts):
        raise UserError(f"device {device!r} has an empty entry; write e.g. 'cuda:0,1' or 'cuda:0,cuda:1'")
    out: list[str] = []
    kind = None
    for p in parts:
        p = p.strip()
        if p.isdigit():  # 'cuda:0,1,2': a bare index continues the previous kind
            if kind is None:
                raise UserError(f"device {device!r}: index {p} has no kind before it; write 'cuda:{p}'")
            d = f"{kind}:{int(p)}"
        elif p.lower().startswith("cpu:") and p[4:].isdigit():
            d = f"cpu:{int(p[4:])}"
        else:
            d = normalize_device(p)
        k = d.partition(":")[0]
        if kind is not None and k != kind:
            raise UserError(f"device {device!r} mixes {kind} and {k}; one model runs on one kind of device")
        kind = k
        if d in out:
            raise UserError(f"device {device!r} names {d} twice; list each device once (more workers per device: "
                            "device_concurrency)")
        out.append(d)
    if len(out) > 1 and out[0] == "cpu":
        raise UserError(f"device {device!r}: several CPU groups are written 'cpu:0,cpu:1'")
    return out


def all_gpus() -> list[str]:
    """'all': every visible CUDA device, or a UserError saying why there is none."""
    count, why = visible_cuda_devices()
    if count <= 0:
        raise UserError(f"device 'all' found no CUDA device on this machine ({why})",
                        hint="run on the CPU (device='cpu', or 'cpu:0,cpu:1' for several CPU worker groups), or "
                             "name the GPUs, e.g. device='cuda:0,1'")
    return [f"cuda:{i}" for i in range(count)]


def visible_cuda_devices() -> tuple[int, str]:
    """(count, how it was found or why none): the CUDA runtime, else nvidia-smi, honouring CUDA_VISIBLE_DEVICES."""
    try:
        from ..accel.nvidia import _cudart

        count, why = _cudart.device_status(_cudart.load())
        if count:
            return count, "cudaGetDeviceCount"
    except Exception as exc:  # no cuda-python: ask nvidia-smi
        why = f"cuda-python is not installed ({type(exc).__name__})"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0, f"{why}; nvidia-smi is not on PATH"
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return 0, f"{why}; nvidia-smi failed: {exc}"
    n = sum(1 for line in out.splitlines() if line.startswith("GPU "))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        n = min(n, len([v for v in visible.split(",") if v.strip() and v.strip() != "-1"]))
    return n, "nvidia-smi -L" if n else f"{why}; nvidia-smi lists no GPU"


def engine_device(device: str) -> str:
    """What a backend is given: a CPU pseudo-device runs on 'cpu'."""
    return "cpu" if device.startswith("cpu") else device


class DeviceStats:
    """Batches, samples and compute seconds per device (thread-safe, cheap)."""

    def __init__(self, devices: Sequence[str]):
        self._lock = threading.Lock()
        self._data = {d: [0, 0, 0.0] for d in devices}

    def record(self, device: str, n: int, seconds: float) -> None:
        with self._lock:
            row = self._data[device]
            row[0] += 1
            row[1] += n
            row[2] += seconds

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {d: {"batches": b, "inferences": n, "compute_s": s} for d, (b, n, s) in self._data.items()}


class Placed(Backend):
    """One worker's backend on one device: counts what it runs; optionally adapts tensor layouts (``adapter``:
    an object with ``to_model(feeds)`` and ``to_batch(outputs, n)``, see ``sequence.Layout``)."""

    def __init__(self, inner: Backend, device: str, stats: DeviceStats, batch_input: tuple[str, int] | None,
                 adapter: Any = None):
        # no Backend.__init__: this wraps a backend, it does not open a bundle
        self.inner = inner
        self.name = inner.name
        self.placement = device
        self.stats = stats
        self._batch_input = batch_input
        self.adapter = adapter

    def __getattr__(self, attr: str) -> Any:
        if attr == "bundle" and self.__dict__.get("adapter") is not None:
            # the batching core must see the adapted (axis-0) layout, not the bundle's
            raise AttributeError(attr)
        return getattr(self.__dict__["inner"], attr)

    @property
    def device(self) -> str:  # type: ignore[override]
        return self.inner.device

    @property
    def active(self) -> bool:  # type: ignore[override]
        return self.inner.active

    def activate(self) -> None:
        self.inner.activate()

    def deactivate(self) -> None:
        self.inner.deactivate()

    def warm(self, feeds: dict[str, np.ndarray]) -> None:
        """One run in the model's own layout, not counted."""
        self.inner.infer(feeds)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = _perf()
        adapter = self.adapter
        if adapter is not None:
            n = len(next(iter(feeds.values())))
            out = adapter.to_batch(self.inner.infer(adapter.to_model(feeds)), n)
        else:
            bi = self._batch_input
            n = feeds[bi[0]].shape[bi[1]] if bi is not None else 1
            out = self.inner.infer(feeds)
        self.stats.record(self.placement, int(n), _perf() - t0)
        return out

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "device": self.placement}
