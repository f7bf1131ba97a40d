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
    InvalidInput,
    MissingDependency,
    ProfileError,
    QueueFull,
    ServerClosing,
    UserError,
    XinferError,
)
from .policy import BatchPolicy
from .profiles import Profile, ProfileRegistry, detect, load_profile

__all__ = [
    "__version__",
    # profiles
    "Profile", "ProfileRegistry", "load_profile", "detect",
    # batching
    "BatchPolicy",
    # errors
    "XinferError", "UserError", "ProfileError", "ConversionError", "BundleError", "InvalidInput",
    "MissingDependency", "BackendUnavailable", "AccuracyGateError", "QueueFull", "DeadlineExceeded", "Cancelled",
    "ServerClosing",
]
