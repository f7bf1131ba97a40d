"""MIGraphX backend: ONNX Runtime's ``MIGraphXExecutionProvider`` on an AMD Instinct GPU (device ``rocm:N``).

ONNX Runtime removed its ROCm execution provider in 1.23; AMD's supported path is the MIGraphX provider, shipped
as ``onnxruntime-migraphx`` (PyPI, and per ROCm release on repo.radeon.com). That package provides the same
``onnxruntime`` module as the CPU/CUDA builds, so it replaces them rather than sitting beside them.

This is its own backend (name ``migraphx``), not a provider inside the ``onnxruntime`` backend, so that
``describe()`` names the engine that runs, the profile's ``backends:`` order means what it says, and the
fallback chain can skip it with its own reason. It reuses the ONNX Runtime backend's session code and adds:

- the provider chain ``[("MIGraphXExecutionProvider", options), "CPUExecutionProvider"]`` (the CPU provider
  takes only the nodes MIGraphX does not claim);
- options from the bundle's precision and the profile (``migraphx_provider_options``);
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
import re
import sys
from collections.abc import Mapping
from typing import Any

from ...errors import BackendUnavailable
from .base import normalize_device
from .onnxruntime import OnnxRuntimeBackend, _name, device_index

log = logging.getLogger(__name__)

PROVIDER = "MIGraphXExecutionProvider"
INSTALL = ("pip uninstall onnxruntime onnxruntime-gpu && pip install onnxruntime-migraphx "
           "(needs ROCm with MIGraphX on the host, e.g. the deploy/docker/Dockerfile.rocm image)")

# Provider option names, exactly as ONNX Runtime parses them (onnxruntime/core/providers/migraphx/
# migraphx_execution_provider_info.h, namespace migraphx_provider_option: kDeviceId "device_id", kFp16Enable
# "migraphx_fp16_enable", kBf16Enable "migraphx_bf16_enable", kFp8Enable "migraphx_fp8_enable", kInt8Enable
# "migraphx_int8_enable", kExhaustiveTune "migraphx_exhaustive_tune", kModelCacheDir "migraphx_model_cache_dir";
# all present in the onnxruntime-migraphx 1.27.1 wheel). Values are strings, "1"/"0" for the flags, as the docs'
# table gives them (onnxruntime.ai/docs/execution-providers/MIGraphX-ExecutionProvider.html, "Session Variables").
OPT_DEVICE = "device_id"
OPT_FP16 = "migraphx_fp16_enable"
OPT_BF16 = "migraphx_bf16_enable"
OPT_FP8 = "migraphx_fp8_enable"
OPT_INT8 = "migraphx_int8_enable"
OPT_TUNE = "migraphx_exhaustive_tune"
OPT_CACHE = "migraphx_model_cache_dir"
# migraphx_model_cache_dir and migraphx_bf16_enable replaced the save/load-compiled-model options (deprecated with
# ROCm 6.4 in the docs); the docs' version table stops at ONNX Runtime 1.22.1 without them and 1.27.1 has them, so
# they are passed from 1.23 on (the first release without the ROCm provider). An option a release does not know
# makes ONNX Runtime drop the provider, which the check after session creation would then report.
CACHE_AND_BF16_SINCE = (1, 23)
# precisions whose graph carries its own quantization (Q/DQ nodes made at build time)
QDQ_PRECISIONS = ("int8", "fp8")


def _version_tuple(version: str | None) -> tuple[int, int] | None:
    m = re.match(r"\s*(\d+)\.(\d+)", str(version or ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def migraphx_provider_options(precision: str, *, device_id: int = 0, cache_dir: str | None = None,
                              fp16: bool | None = None, exhaustive_tune: bool = False,
                              ort_version: str | None = None) -> dict[str, str]:
    """Options for ``("MIGraphXExecutionProvider", options)`` from the bundle's precision.

    - fp32 / tf32 / as-is: no reduced precision, so the GPU computes what the accuracy gate measured.
    - fp16: ``migraphx_fp16_enable=1`` (the graph is FP16 already; the flag lets MIGraphX run the few ops the
      FP16 converter kept in FP32 at FP16 too, as TensorRT 10's FP16 flag does). ``fp16=False`` turns it off.
    - bf16: ``migraphx_bf16_enable=1`` (ONNX Runtime >= 1.23; before that the graph's BF16 types decide).
    - int8 / fp8: the graph's Q/DQ nodes carry the quantization and MIGraphX parses them (on gfx942 its
      ``fp8_ocp_to_fnuz`` pass rewrites OCP E4M3FN Q/DQ to the FNUZ type CDNA 3 has). ``migraphx_int8_enable`` /
      ``migraphx_fp8_enable`` are MIGraphX's *own* calibrated quantization, which ONNX Runtime applies only with a
      calibration table (``calibrate_and_quantize`` in the provider): they are set "0" so the bundle's gated
      graph is what runs. The ops left in float stay FP32 unless ``fp16=True``.
    """
    precision = (precision or "as-is").lower()
    ver = _version_tuple(ort_version if ort_version is not None else _installed_ort_version())
    new = ver is None or ver >= CACHE_AND_BF16_SINCE
    use_fp16 = precision == "fp16" if fp16 is None else bool(fp16)
    opts: dict[str, str] = {
        OPT_DEVICE: str(int(device_id)),
        OPT_FP16: "1" if use_fp16 else "0",
        OPT_INT8: "0",
        OPT_FP8: "0",
    }
    if precision == "bf16" and new and not use_fp16:  # the provider ignores both when both are set
        opts[OPT_BF16] = "1"
    if exhaustive_tune:
        opts[OPT_TUNE] = "1"
    if cache_dir and new:
        opts[OPT_CACHE] = str(cache_dir)
    return opts


def _installed_ort_version() -> str | None:
    mod = sys.modules.get("onnxruntime")
    return getattr(mod, "__version__", None) if mod is not None else None


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
        cache = self.options.get("cache_dir")
        if not cache:
            from ...engine_plan import user_engine_dir

            sha = next((a.sha256 for a in self.bundle.manifest.artifacts_by_role("model")), "")
            cache = str(self.bundle.engines_dir / "migraphx") if self.bundle.engines_writable() else \
                os.path.join(user_engine_dir(sha), "migraphx")
        try:
            os.makedirs(cache, exist_ok=True)
        except OSError as exc:
            log.warning("%-28s | MIGraphX compiles every start: cannot create its model cache %s (%s)",
                        f"migraphx[{self.bundle.name}]", cache, exc)
            return None
        return str(cache)

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
