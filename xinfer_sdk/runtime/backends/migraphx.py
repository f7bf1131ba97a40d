"""MIGraphX backend: ONNX Runtime's ``MIGraphXExecutionProvider`` on an AMD Instinct GPU (device ``rocm:N``).

ONNX Runtime removed its ROCm execution provider in 1.23; AMD's supported path is the MIGraphX provider, shipped
as ``onnxruntime-migraphx`` (PyPI, and per ROCm release on repo.radeon.com). That package provides the same
``onnxruntime`` module as the CPU/CUDA builds, so it replaces them rather than sitting beside them.

This is its own backend (name ``migraphx``), not a provider inside the ``onnxruntime`` backend, so that
``describe()`` names the engine that runs, the profile's ``backends:`` order means what it says, and the
fallback chain can skip it with its own reason. It reuses the ONNX Runtime backend's session code and adds:

- the provider chain ``[("MIGraphXExecutionProvider", options), "CPUExecutionProvider"]`` (the CPU provider
  takes only the nodes MIGraphX does not claim);
- options from the bundle's precision and the profile (``migraphx_provider_options`` in ``xinfer_sdk/accel/amd``);
- the check after the session is made: when the MIGraphX provider did not start, ONNX Runtime prints "EP Error"
  and quietly retries on ``['CPUExecutionProvider']`` (seen with onnxruntime-migraphx 1.27.1 on a machine
  without ROCm: ``libmigraphx_c.so.3: cannot open shared object file``). That session is refused with
  ``BackendUnavailable`` so the fallback chain moves on and a ``rocm`` device never runs on the CPU unnoticed.

Never run on AMD hardware: written against ONNX Runtime's documented provider options and tested with a
recording double of ``onnxruntime`` (tests/unit/runtime/test_migraphx_backend.py).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from typing import Any

from ...accel.amd.migraphx_options import (
    OPT_BF16,
    OPT_CACHE,
    OPT_FP8,
    OPT_FP16,
    OPT_INT8,
    PROVIDER,
    migraphx_provider_options,
)
from ...errors import BackendUnavailable
from .base import normalize_device
from .onnxruntime import OnnxRuntimeBackend, _name, device_index

log = logging.getLogger(__name__)

INSTALL = ("pip uninstall onnxruntime onnxruntime-gpu && pip install onnxruntime-migraphx "
           "(needs ROCm with MIGraphX on the host, e.g. the deploy/docker/Dockerfile.rocm image)")


@functools.cache
def _provider_report() -> dict[str, Any]:
    """What the installed onnxruntime lists and what a probe session really starts (cached per process)."""
    from ...doctor import ort_providers

    return ort_providers()


class MIGraphXBackend(OnnxRuntimeBackend):
    name = "migraphx"
    extra = ""
    devices = ("rocm",)

    @classmethod
    def unavailable_reason(cls, bundle, profile, device):
        if not normalize_device(device).startswith("rocm"):
            return f"MIGraphX runs on an AMD GPU (device 'rocm:N'), not {device}"
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return f"onnxruntime is not importable ({exc}); {INSTALL}"
        report = _provider_report()
        if PROVIDER not in report.get("listed", ()):
            version = f" {report['version']}" if report.get("version") else ""
            return (f"the installed onnxruntime{version} has no {PROVIDER} (it lists {report.get('listed', [])}); "
                    f"{INSTALL}")
        if PROVIDER not in report.get("working", ()):
            why = (report.get("not_working") or {}).get(PROVIDER, "did not start")
            return (f"{PROVIDER} is installed but did not start ({why}); it needs ROCm's MIGraphX libraries and an "
                    "AMD GPU this process can open (/dev/kfd, /dev/dri)")
        precision = bundle.manifest.precision
        if precision in profile.precisions or precision in ("as-is", "fp32"):
            return None
        return (f"bundle '{bundle.name}' is {precision} but profile '{profile.name}' lists only "
                f"{list(profile.precisions)}; rebuild it for this profile")

    def providers(self) -> list[Any]:
        idx = device_index(self.device)
        opts = migraphx_provider_options(self.bundle.manifest.precision, device_id=idx,
                                         cache_dir=self._cache_dir(), fp16=self.options.get("fp16"),
                                         exhaustive_tune=bool(self.options.get("exhaustive_tune")))
        return [(PROVIDER, opts), "CPUExecutionProvider"]

    def _cache_dir(self) -> str | None:
        """Where MIGraphX keeps compiled programs (one per input shape): in the bundle, else the user cache."""
        return self._compiled_cache_dir("migraphx", "MIGraphX compiles every start: cannot create its model cache")

    def _session(self, ort: Any, so: Any, chain: list[Any]) -> Any:
        path = str(self.bundle.model_file)
        try:
            return ort.InferenceSession(path, so, providers=chain)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise BackendUnavailable(self.name, f"cannot create a session for {os.path.basename(path)}: "
                                     f"{first}") from exc

    def _after_fallback(self, ort: Any, so: Any, chain: list[Any], got: list[str]) -> Any:
        """ONNX Runtime dropped the MIGraphX provider and went on with the CPU: refuse that session."""
        self.dropped = [_name(p) for p in chain if _name(p) not in got]
        if PROVIDER not in got:
            raise BackendUnavailable(self.name, f"{PROVIDER} did not start for {self.device} (ONNX Runtime fell "
                                     f"back to {got}); see `xinfer-sdk doctor` and the ROCm/MIGraphX install")
        return self.session  # only the CPU provider was dropped: nothing of ours was lost

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        sess = getattr(self, "session", None)
        if sess is not None:
            opts: Mapping[str, Any] = (sess.get_provider_options() or {}).get(PROVIDER, {}) \
                if hasattr(sess, "get_provider_options") else {}
            d["provider_options"] = {k: opts[k] for k in (OPT_FP16, OPT_BF16, OPT_INT8, OPT_FP8, OPT_CACHE)
                                     if k in opts}
        return d
