"""The runtime path (load a bundle, infer, batch) works in a venv holding only numpy, pyyaml and onnxruntime,
on Python 3.10 when the machine has it (JetPack 6's Python), and imports none of torch / onnx / click / the
server stack."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
HEAVY = ["torch", "onnx", "click", "rich", "prometheus_client", "grpc", "httptools", "tensorrt", "matplotlib"]


def _python310():
    for cand in ("python3.10", os.path.expanduser("~/.pyenv/versions/3.10.13/bin/python3.10")):
        exe = shutil.which(cand) or (cand if os.path.exists(cand) else None)
        if exe:
            try:
                out = subprocess.run([exe, "-c", "import sys, venv; print(sys.version_info[:2])"], capture_output=True,
                                     text=True, timeout=30)
            except (OSError, subprocess.SubprocessError):
                continue
            if out.returncode == 0 and "(3, 10)" in out.stdout:
                return exe
    return None


@pytest.mark.slow
def test_runtime_in_a_minimal_venv(tmp_path, mlp_onnx):
    path, ref = mlp_onnx
    python = _python310() or sys.executable
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    vpy = str(venv / "bin" / "python")
    pip = [vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "numpy", "pyyaml", "onnxruntime"], check=True, timeout=600)
    # a regular (non-editable) install, like a wheel: only what the package ships. From a copy of the sources,
    # so the build leaves nothing in the checkout.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "tests",
                                                              "bench", "__pycache__", ".*cache*", "*.xinfer"))
    subprocess.run([*pip, "--no-deps", str(src)], check=True, timeout=600, cwd=tmp_path)
    script = textwrap.dedent(f"""
        import sys, json
        import numpy as np
        import xinfer_sdk as xs
        with xs.load({str(path)!r}, profile="cpu", batching=xs.BatchPolicy(max_batch_size=4)) as m:
            futs = [m.submit({{"input": np.full((1, 8), i, np.float32)}}) for i in range(6)]
            outs = [f.result(timeout=30)["output"].tolist() for f in futs]
            backend = m.describe()["backend"]
        heavy = sorted(n for n in {HEAVY!r} if n in sys.modules)
        print(json.dumps({{"outs": outs, "backend": backend, "heavy": heavy, "py": list(sys.version_info[:2])}}))
    """)
    out = subprocess.run([vpy, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    import numpy as np

    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == "onnxruntime" and result["heavy"] == []
    for i, o in enumerate(result["outs"]):
        np.testing.assert_allclose(o, ref(np.full((1, 8), i, np.float32)), rtol=1e-4, atol=1e-4)
    listing = subprocess.run([vpy, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True).stdout
    for pkg in ("torch", "onnx=", "click", "rich", "grpcio"):
        assert pkg not in listing.lower()

