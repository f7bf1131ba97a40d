"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers, chosen from the profile and device."""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import numpy as np

from ...errors import BackendUnavailable
from .base import Backend

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
    _, _, idx = device.partition(":")
    return int(idx) if idx.isdigit() else 0


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    extra = "cpu"

    @classmethod
    def unavailable_reason(cls, bundle, profile, device):
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return f"onnxruntime is not importable ({exc}); install 'xinfer-sdk[cpu]' (or [gpu] for CUDA)"
        if device.startswith("cuda"):
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
            from ...engine_plan import ort_trt_provider_options, user_engine_dir

            cache = self.options.get("cache_dir")
            if not cache:  # in the bundle, or the user cache when the bundle is mounted read-only
                sha = next((a.sha256 for a in self.bundle.manifest.artifacts_by_role("model")), "")
                cache = str(self.bundle.engines_dir / "ort-trt") if self.bundle.engines_writable() else \
                    os.path.join(user_engine_dir(sha), "ort-trt")
            chain.append(("TensorrtExecutionProvider", ort_trt_provider_options(plan, cache, device_id=idx)))
        if "CUDAExecutionProvider" in working:
            chain.append(("CUDAExecutionProvider", {"device_id": idx}))
        chain.append("CPUExecutionProvider")
        return chain

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
        path = str(self.bundle.model_file)
        try:
            self.session = ort.InferenceSession(path, so, providers=self.providers())
        except Exception as exc:
            raise BackendUnavailable("onnxruntime", f"cannot create a session for {os.path.basename(path)}: "
                                     f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from exc
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._run = self.session.run
        # ONNX Runtime's binding turns a Python bytes object into its repr ("b'...'"): pass strings instead
        self._string_inputs = [i.name for i in self.session.get_inputs() if i.type == "tensor(string)"]
        log.info("%-28s | session ready: providers=%s threads=%s", f"onnxruntime[{self.bundle.name}]",
                 self.session.get_providers(), self.threads)

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._string_inputs:
            feeds = dict(feeds)
            for name in self._string_inputs:
                feeds[name] = _as_str(feeds[name])
        return dict(zip(self.output_names, self._run(self.output_names, feeds)))

    def deactivate_impl(self) -> None:
        self.session = None
        self._run = None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        sess = getattr(self, "session", None)
        if sess is not None:
            d["providers"] = sess.get_providers()
        return d
