"""Heavy and optional packages are imported at first use, never at ``import xinfer_sdk``.

``require("onnx", extra="build")`` returns the module or raises ``MissingDependency`` naming the pip extra.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import MissingDependency

# package to import -> the extra of xinfer-sdk that installs it
EXTRAS = {
    "onnx": "build", "onnxslim": "build", "onnxruntime": "cpu", "torch": "torch", "tensorrt": "tensorrt",
    "cuda": "gpu", "pynvml": "gpu", "click": "cli", "rich": "cli", "prometheus_client": "serve",
    "httptools": "serve", "grpc": "serve", "google.protobuf": "serve", "matplotlib": "serve",
    "ml_dtypes": "build",
}


def require(module: str, *, purpose: str | None = None, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise MissingDependency that says which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(module.split(".")[0], extra or EXTRAS.get(module, module), purpose=purpose,
                                cause=str(exc)) from exc


def available(module: str) -> bool:
    """True when ``module`` can be found (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
