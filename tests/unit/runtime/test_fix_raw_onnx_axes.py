"""A raw .onnx (no bundle) gets each tensor's batch axis as ``build`` infers it (runtime/axes.py): a state batched on
axis 1 and a scalar input shared by a batch load batched, and the batching core stacks along those axes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

import xinfer_sdk as xs  # noqa: E402
from xinfer_sdk.runtime.loader import bundle_from_onnx  # noqa: E402

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def vad_like(path: Path) -> Path:
    """silero-vad's layout, unnamed dims: x [?, 3], state [2, ?, 4], sr [] -> y = x * sr [?, 3], stateN = state + 1."""
    n = helper.make_node
    g = helper.make_graph(
        [n("Cast", ["sr"], ["srf"], to=F), n("Mul", ["x", "srf"], ["y"]), n("Add", ["state", "one"], ["stateN"])],
        "vad", [helper.make_tensor_value_info("x", F, [None, 3]),
                helper.make_tensor_value_info("state", F, [2, None, 4]),
                helper.make_tensor_value_info("sr", I64, [])],
        [helper.make_tensor_value_info("y", F, [None, 3]), helper.make_tensor_value_info("stateN", F, [2, None, 4])],
        [helper.make_tensor("one", F, [], [1.0])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_raw_onnx_with_a_state_on_axis_1_and_a_scalar_loads_batched(tmp_path):
    m = bundle_from_onnx(vad_like(tmp_path / "vad.onnx")).manifest
    assert m.max_batch_size > 0
    assert [(s.name, s.batch_axis) for s in m.inputs] == [("x", 0), ("state", 1), ("sr", None)]
    assert [(s.name, s.batch_axis) for s in m.outputs] == [("y", 0), ("stateN", 1)]


def test_raw_onnx_requests_merge_along_each_tensors_axis(tmp_path):
    path = vad_like(tmp_path / "vad.onnx")
    with xs.load(path, profile="cpu", threads=1, sequence=False,
                 batching={"max_batch_size": 8, "max_batch_delay": "200ms", "preferred_batch_sizes": [4]}) as model:
        assert model.max_batch_size == 8
        rng = np.random.default_rng(0)
        reqs = [{"x": rng.standard_normal((1, 3)).astype(np.float32),
                 "state": np.full((2, 1, 4), k, np.float32), "sr": np.array(3, np.int64)} for k in range(4)]
        futs = [model.submit(r) for r in reqs]
        outs = [f.result(timeout=10) for f in futs]
        for r, o in zip(reqs, outs):
            np.testing.assert_allclose(o["y"], r["x"] * 3, rtol=1e-6)
            np.testing.assert_array_equal(o["stateN"], r["state"] + 1)
        assert model.stats()["batches"] == 1  # the four went out as one batch of 4


def test_describe_shows_batch_axes_other_than_0_and_padding(tmp_path):
    with xs.load(vad_like(tmp_path / "vad.onnx"), profile="cpu", threads=1, sequence=False) as model:
        info = model.describe()
    assert info["padding"] is None
    assert {t["name"]: t.get("batch_axis", 0) for t in info["inputs"]} == {"x": 0, "state": 1, "sr": None}
    assert "batch_axis" not in info["inputs"][0]  # axis 0, the common case, is not repeated


def test_the_core_gets_the_models_axes_explicitly(tmp_path):
    with xs.load(vad_like(tmp_path / "vad.onnx"), profile="cpu", threads=1, sequence=False) as model:
        assert model.batcher.layout.in_axes == {"x": 0, "state": 1, "sr": None}
        assert model.batcher.layout.out_axes == {"y": 0, "stateN": 1}


def test_a_stateful_raw_onnx_hands_the_core_its_axis_0_view(tmp_path):
    """state/stateN are found as a sequence pair; the core sees every tensor on axis 0 (sequence.Layout moves it)."""
    with xs.load(vad_like(tmp_path / "vad.onnx"), profile="cpu", threads=1) as model:
        assert model.sequences is not None and model.max_batch_size > 0
        assert set(model.batcher.layout.in_axes.values()) == {0}
        with model.stream() as s:
            out = s({"x": np.ones((1, 3), np.float32), "sr": np.array(2, np.int64)})
        np.testing.assert_allclose(out["y"], np.full((1, 3), 2.0))
