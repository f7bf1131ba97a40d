"""PyTorch backend: a TorchScript archive or a torch.export ExportedProgram stored in the bundle.

Never unpickles: TorchScript loads with ``torch.jit.load`` and ExportedPrograms with ``torch.export.load``.
FP16 runs where the profile says so and the device has it (CUDA); on CPU the model runs in FP32.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ...errors import BackendUnavailable
from .base import Backend

log = logging.getLogger(__name__)

ROLES = ("torchscript", "exported_program")


def torch_artifact(bundle) -> tuple[str, str] | None:
    for role in ROLES:
        arts = bundle.manifest.artifacts_by_role(role)
        if arts:
            return role, arts[0].path
    return None


class TorchBackend(Backend):
    name = "torch"
    extra = "torch"

    @classmethod
    def unavailable_reason(cls, bundle, profile, device):
        if torch_artifact(bundle) is None:
            return ("the bundle holds no TorchScript / ExportedProgram (it was built from ONNX); build it from a "
                    "PyTorch model to use this backend")
        try:
            import torch
        except ImportError as exc:
            return f"torch is not importable ({exc}); install 'xinfer-sdk[torch]'"
        if device.startswith("cuda") and not torch.cuda.is_available():
            return "torch has no CUDA device here (CPU build or no GPU)"
        return None

    def activate_impl(self) -> None:
        import torch

        role, rel = torch_artifact(self.bundle)
        path = str(self.bundle.path(rel))
        dev = torch.device(self.device if self.device.startswith("cuda") else "cpu")
        if self.threads:
            torch.set_num_threads(int(self.threads))
        try:
            if role == "torchscript":
                module = torch.jit.load(path, map_location=dev)
            else:
                module = torch.export.load(path).module().to(dev)
        except Exception as exc:
            raise BackendUnavailable("torch", f"cannot load {rel}: {exc}") from exc
        if hasattr(module, "eval"):
            module.eval()
        self.half = self.bundle.manifest.precision == "fp16" and dev.type == "cuda"
        if self.half:
            module = module.half()
        self.module = module
        self.dev = dev
        self.torch = torch
        self.in_names = [t.name for t in self.bundle.manifest.inputs]
        self.out_specs = [(t.name, np.dtype(t.dtype)) for t in self.bundle.manifest.outputs]
        log.info("%-28s | %s loaded on %s%s", f"torch[{self.bundle.name}]", role, dev, " (fp16)" if self.half else "")

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        args = []
        for name in self.in_names:
            t = torch.from_numpy(np.ascontiguousarray(feeds[name])).to(self.dev, non_blocking=True)
            if self.half and t.is_floating_point():
                t = t.half()
            args.append(t)
        with torch.inference_mode():
            out = self.module(*args)
        if isinstance(out, dict):
            values = [out[name] for name, _ in self.out_specs]
        elif isinstance(out, (tuple, list)):
            values = list(out)
        else:
            values = [out]
        if len(values) != len(self.out_specs):
            raise ValueError(f"the torch model returned {len(values)} outputs, the bundle declares "
                             f"{len(self.out_specs)}")
        return {name: v.detach().to("cpu").numpy().astype(dtype, copy=False)
                for (name, dtype), v in zip(self.out_specs, values)}

    def deactivate_impl(self) -> None:
        self.module = None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["fp16"] = bool(getattr(self, "half", False))
        return d
