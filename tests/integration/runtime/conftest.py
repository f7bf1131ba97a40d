"""Tiny real models for runtime tests, made in-process (no downloads)."""

from __future__ import annotations

import pytest
from onnx_models import make_mlp_onnx


@pytest.fixture
def mlp_onnx(tmp_path):
    path = tmp_path / "mlp.onnx"
    ref = make_mlp_onnx(path)
    return path, ref
