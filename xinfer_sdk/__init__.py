"""xinfer-sdk: build a model for a hardware profile, run it anywhere with one batching core, serve it.

The public surface, in the order a user meets it::

    import xinfer_sdk as xs
    xs.detect()                                  # which hardware profile fits this machine
    prof = xs.load_profile("t4")                 # a validated hardware profile
    xs.BatchPolicy(max_batch_size=32, max_batch_delay="2ms")

Heavy parts (converters, engines, the server) are imported on first use, so ``import xinfer_sdk`` needs
only numpy and pyyaml.
"""

from __future__ import annotations

from ._version import __version__
from .errors import (
    AccuracyGateError,
    BackendUnavailable,
    BundleError,
    Cancelled,
    ConversionError,
    DeadlineExceeded,
    EngineFatal,
    InferenceError,
    InvalidInput,
    MissingDependency,
    ProfileError,
    QueueFull,
    ServerClosing,
    UserError,
    WorkersUnavailable,
    XinferError,
)
from .policy import BatchPolicy
from .profiles import Profile, ProfileRegistry, detect, load_profile

# Public names that live in heavier modules, imported on first access (PEP 562).
_LAZY = {
    "load": "xinfer_sdk.runtime.loader",
    "Model": "xinfer_sdk.runtime.model",
    "build": "xinfer_sdk.builder",
    "open_bundle": "xinfer_sdk.bundle",
    "Bundle": "xinfer_sdk.bundle",
    "InferenceServer": "xinfer_sdk.server.app",
    "plan": "xinfer_sdk.planning",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'xinfer_sdk' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

__all__ = [
    "__version__",
    # build, load, run, serve, plan
    "build", "load", "Model", "open_bundle", "Bundle", "InferenceServer", "plan",
    # profiles
    "Profile", "ProfileRegistry", "load_profile", "detect",
    # batching
    "BatchPolicy",
    # errors
    "XinferError", "UserError", "ProfileError", "ConversionError", "BundleError", "InvalidInput",
    "MissingDependency", "BackendUnavailable", "AccuracyGateError", "QueueFull", "DeadlineExceeded", "Cancelled",
    "ServerClosing", "InferenceError", "EngineFatal", "WorkersUnavailable",
]
