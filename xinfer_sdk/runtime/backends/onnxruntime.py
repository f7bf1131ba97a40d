"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers, chosen from the profile and device.

The provider chain for ``cuda:N`` is TensorRT EP (when the bundle has an engine plan and the profile lists
tensorrt) -> CUDA EP -> CPU, each with ``device_id=N``. ONNX Runtime's Python layer cannot be stopped from
falling back when a provider fails to start inside ``InferenceSession()``: it prints "EP Error" and retries with
``['CUDAExecutionProvider', 'CPUExecutionProvider']`` *without options* (so on device 0, TF32 on). After the
session is made we compare ``session.get_providers()`` with the chain we asked for: when a GPU provider was
dropped the session is made again with the providers that did start, keeping our options (a warning names the
one that failed); when no GPU provider started at all for a ``cuda`` device, activation fails with
``BackendUnavailable`` instead of running silently on the CPU.

FP32 bundles get ``use_tf32=0`` in the CUDA EP (ORT's default is TF32 on for FP32 MatMul/Conv on Ampere+), so
an FP32 model computes what the accuracy gate measured, as on the TensorRT path. ORT's TensorRT EP has no such
option: only ``NVIDIA_TF32_OVERRIDE=0`` in the environment before the first session (see docs/tensorrt.md).

A run error whose text names a sticky CUDA error (ORT's "CUDA failure 700: an illegal memory access was
encountered ...", a device-side assert, a launch failure; ``EngineFatal.MARKERS``) is raised as ``EngineFatal``,
so the batching core replaces this worker's session instead of feeding it more batches.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import numpy as np

from ...errors import BackendUnavailable, EngineFatal
from .base import Backend, normalize_device

log = logging.getLogger(__name__)


@functools.cache
def _working_providers() -> tuple[str, ...]:
    """Providers a real session can use here (listed != usable: a GPU build lists CUDA without a GPU)."""
    from ...doctor import ort_providers

    return tuple(ort_providers().get("working", ()))


def _as_str(arr: np.ndarray) -> np.ndarray:
    """bytes elements -> str (UTF-8, undecodable bytes kept via surrogateescape) for ORT string tensors."""
    flat = [v.decode("utf-8", "surrogateescape") if isinstance(v, (bytes, bytearray)) else v for v in arr.ravel()]
    return np.array(flat, dtype=object).reshape(arr.shape)


def device_index(device: str) -> int:
    _, _, idx = normalize_device(device).partition(":")
    return int(idx) if idx.isdigit() else 0


def _name(provider: Any) -> str:
    return provider if isinstance(provider, str) else provider[0]


_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
# ONNX Runtime rewrites that drop a Relu / Clip feeding a QuantizeLinear, right for uint8 but not for float8
# (E4M3 keeps negatives): off for FP8 bundles, as in their accuracy gate (converters/fp8.ORT_DISABLED_OPTIMIZERS)
_FP8_DISABLED_REWRITES = ("ReluQuantRewrite", "ClipQuantRewrite")
# precisions whose FP32 math must stay FP32 (no TF32 tensor cores) in the CUDA EP
_NO_TF32 = ("fp32", "as-is")


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    extra = "cpu"

    @classmethod
    def unavailable_reason(cls, bundle, profile, device):
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return f"onnxruntime is not importable ({exc}); install 'xinfer-sdk[cpu]' (or [gpu] for CUDA)"
        if normalize_device(device).startswith("cuda"):
            working = _working_providers()
            if "CUDAExecutionProvider" not in working and "TensorrtExecutionProvider" not in working:
                return ("no working CUDA/TensorRT execution provider (onnxruntime-gpu not installed, or no GPU); "
                        "install 'xinfer-sdk[gpu]' on a GPU machine")
        return None

    def providers(self) -> list[Any]:
        if not self.device.startswith("cuda"):
            return ["CPUExecutionProvider"]
        working = _working_providers()
        idx = device_index(self.device)
        chain: list[Any] = []
        plan = self.bundle.manifest.engine_plan
        if "TensorrtExecutionProvider" in working and "tensorrt" in self.profile.backends and plan:
            cache = self._trt_cache_dir()
            if cache is not None:
                from ...accel.nvidia.engine_plan import ort_trt_provider_options

                chain.append(("TensorrtExecutionProvider", ort_trt_provider_options(plan, cache, device_id=idx)))
        if "CUDAExecutionProvider" in working:
            chain.append(("CUDAExecutionProvider", self.cuda_options(idx)))
        chain.append("CPUExecutionProvider")
        return chain

    def cuda_options(self, idx: int) -> dict[str, Any]:
        """CUDA EP options: the device, and TF32 off for FP32 bundles (``options={'tf32': True}`` keeps it on)."""
        opts: dict[str, Any] = {"device_id": idx}
        tf32 = self.options.get("tf32")
        if tf32 is False or (tf32 is None and self.bundle.manifest.precision in _NO_TF32):
            opts["use_tf32"] = "0"
        return opts

    def _trt_cache_dir(self) -> str | None:
        """The TensorRT EP's engine cache dir, created now: ORT makes only its last level and falls back to the
        CUDA EP (on device 0, without options) when the parent is missing. None (no TensorRT EP) if it can't be."""
        return self._compiled_cache_dir("ort-trt", "TensorRT EP left out: cannot create its engine cache")

    def _compiled_cache_dir(self, sub: str, failure: str) -> str | None:
        """``options['cache_dir']``, else ``engines/<sub>`` in the bundle, else the user cache when the bundle is
        mounted read-only; created with its parents. None (with ``failure`` logged) when it cannot be."""
        cache = self.options.get("cache_dir")
        if not cache:
            from ...accel.nvidia.engine_plan import user_engine_dir

            sha = next((a.sha256 for a in self.bundle.manifest.artifacts_by_role("model")), "")
            cache = str(self.bundle.engines_dir / sub) if self.bundle.engines_writable() else \
                os.path.join(user_engine_dir(sha), sub)
        try:
            os.makedirs(cache, exist_ok=True)
        except OSError as exc:
            log.warning("%-28s | %s %s (%s)", f"{self.name}[{self.bundle.name}]", failure, cache, exc)
            return None
        return str(cache)

    def activate_impl(self) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        spinning = self.options.get("spinning")
        if spinning is not None:
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        chain = self.providers()
        self.session = self._session(ort, so, chain)
        self.dropped: list[str] = []
        got = list(self.session.get_providers())
        if got != [_name(p) for p in chain]:
            self.session = self._after_fallback(ort, so, chain, got)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._run = self.session.run
        # ONNX Runtime's binding turns a Python bytes object into its repr ("b'...'"): pass strings instead
        self._string_inputs = [i.name for i in self.session.get_inputs() if i.type == "tensor(string)"]
        log.info("%-28s | session ready: providers=%s threads=%s", f"onnxruntime[{self.bundle.name}]",
                 self.session.get_providers(), self.threads)

    def _session(self, ort: Any, so: Any, chain: list[Any]) -> Any:
        path = str(self.bundle.model_file)
        # FP8 bundles: without the Relu/Clip-before-QuantizeLinear rewrites, wrong for float8 (converters/fp8.py)
        fp8 = {"disabled_optimizers": list(_FP8_DISABLED_REWRITES)} if self.bundle.manifest.precision == "fp8" else {}
        try:
            return ort.InferenceSession(path, so, providers=chain, **fp8)
        except Exception as exc:
            raise BackendUnavailable("onnxruntime", f"cannot create a session for {os.path.basename(path)}: "
                                     f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from exc

    def _after_fallback(self, ort: Any, so: Any, chain: list[Any], got: list[str]) -> Any:
        """ORT dropped providers we asked for (and its own fallback loses our options): refuse a silent CPU run
        of a cuda device, else make the session again with the providers that did start and our options."""
        self.dropped = [_name(p) for p in chain if _name(p) not in got]
        tag = f"onnxruntime[{self.bundle.name}]"
        if self.device.startswith("cuda") and not any(p in got for p in _GPU_PROVIDERS):
            raise BackendUnavailable("onnxruntime", f"{', '.join(self.dropped)} did not start for {self.device} "
                                     f"(ONNX Runtime fell back to {got}); see `xinfer-sdk doctor` for the CUDA/"
                                     "driver mismatch")
        kept = [p for p in chain if _name(p) in got]
        log.warning("%-28s | ONNX Runtime could not start %s and fell back to %s; made the session again with "
                    "%s and our options (device_id, TF32)", tag, ", ".join(self.dropped), got,
                    [_name(p) for p in kept])
        session = self._session(ort, so, kept)
        if list(session.get_providers()) != [_name(p) for p in kept]:
            raise BackendUnavailable("onnxruntime", f"providers {[_name(p) for p in kept]} did not start again "
                                     f"(got {session.get_providers()})")
        return session

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._string_inputs:
            feeds = dict(feeds)
            for name in self._string_inputs:
                feeds[name] = _as_str(feeds[name])
        try:
            return dict(zip(self.output_names, self._run(self.output_names, feeds)))
        except Exception as exc:  # Fail / RuntimeException / EPFail from the session
            fatal = EngineFatal.recognise(exc, "onnxruntime")
            if fatal is None:
                raise
            raise fatal from exc

    def deactivate_impl(self) -> None:
        self.session = None
        self._run = None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        sess = getattr(self, "session", None)
        if sess is not None:
            d["providers"] = sess.get_providers()
            if getattr(self, "dropped", None):
                d["providers_dropped"] = list(self.dropped)
        return d
