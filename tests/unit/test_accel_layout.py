"""``xinfer_sdk.accel`` (the vendor-specific engine code) sits left of converters and runtime: it imports only
errors, profiles, bundle, shapes, policy and its own modules, and no vendor library at module import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import xinfer_sdk

ACCEL = Path(xinfer_sdk.__file__).parent / "accel"
ALLOWED = {"errors", "profiles", "bundle", "shapes", "policy", "accel"}


def _sdk_imports(path: Path) -> set[str]:
    """The first component below ``xinfer_sdk`` of every import in ``path`` that reaches into the package."""
    pkg = path.relative_to(ACCEL.parent).parent.parts  # e.g. ("accel", "nvidia")
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg[: len(pkg) - (node.level - 1)]) if node.level - 1 <= len(pkg) else []
                parts = base + (node.module.split(".") if node.module else [])
                names = [parts[0]] if parts else [a.name for a in node.names]
                out.update(names)
            elif node.module and node.module.startswith("xinfer_sdk."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("xinfer_sdk."))
    return out


def test_accel_imports_only_from_its_left():
    files = sorted(ACCEL.rglob("*.py"))
    assert len(files) >= 6, files  # accel, nvidia (engine_plan, ort_trt_options, _cudart), amd (migraphx_options)
    bad = {str(f.relative_to(ACCEL)): sorted(_sdk_imports(f) - ALLOWED) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_accel_imports_no_vendor_library():
    code = ("import sys, xinfer_sdk.accel.nvidia.engine_plan, xinfer_sdk.accel.nvidia._cudart, "
            "xinfer_sdk.accel.amd.migraphx_options; "
            "print(sorted(m for m in ('tensorrt', 'cuda', 'onnxruntime', 'torch', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
