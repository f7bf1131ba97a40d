"""NVTX ranges: optional (a no-op without the package), and the batching core opens and closes them per batch."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

from xinfer_sdk.runtime import trace


def _reloaded_without_nvtx(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvtx", None)  # `import nvtx` raises ImportError
    return importlib.reload(trace)


def test_without_nvtx_push_and_pop_are_the_no_op(monkeypatch):
    try:
        mod = _reloaded_without_nvtx(monkeypatch)
        assert mod.NVTX is False and mod.push is mod._noop and mod.pop is mod._noop
    finally:
        monkeypatch.undo()
        importlib.reload(trace)


def test_with_nvtx_a_range_pair_goes_to_the_package():
    pytest.importorskip("nvtx")
    assert trace.NVTX is True and trace.push is not trace._noop
    trace.push("xinfer/test")  # no tool attached: a cheap no-op inside libnvtx, but a real call
    trace.pop()


def test_each_batch_opens_and_closes_assemble_compute_scatter(monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from onnx_models import make_mlp_onnx

    import xinfer_sdk as xs

    make_mlp_onnx(tmp_path / "m.onnx")
    calls: list[str] = []
    model = xs.load(tmp_path / "m.onnx", profile="cpu", threads=1, warmup=False)
    try:
        monkeypatch.setattr(trace, "push", lambda name: calls.append(name))
        monkeypatch.setattr(trace, "pop", lambda: calls.append("pop"))
        model.infer({"input": np.ones((2, 8), np.float32)})
    finally:
        monkeypatch.undo()
        model.close()
    assert [c for c in calls if c != "pop"] == ["xinfer/assemble", "xinfer/compute", "xinfer/scatter"]
    depth = 0
    for c in calls:
        depth += -1 if c == "pop" else 1
        assert depth in (0, 1)  # never nested, never popped below zero
    assert depth == 0
