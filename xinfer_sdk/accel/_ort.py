"""ONNX Runtime version helpers shared by the vendors' execution-provider options (no onnxruntime import here)."""

from __future__ import annotations

import re
import sys


def version_tuple(version: str | None) -> tuple[int, int] | None:
    """(major, minor) of a version string such as "1.23.2" or "1.24.0.dev1"; None when it has none."""
    m = re.match(r"\s*(\d+)\.(\d+)", str(version or ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def installed_ort_version() -> str | None:
    """onnxruntime's version if it is already imported (no import here: the accel modules stay light)."""
    mod = sys.modules.get("onnxruntime")
    return getattr(mod, "__version__", None) if mod is not None else None
