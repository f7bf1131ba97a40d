"""The model the docs build: `make demo`'s out/demo (digits), built once per session and copied into each page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def demo_out(tmp_path_factory) -> Path:
    """What `make demo` leaves in out/demo (examples/demo.py without its serve step: the pages serve it)."""
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("demo") / "out" / "demo"
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--workdir", str(out), "--skip-serve"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"examples/demo.py failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return out
