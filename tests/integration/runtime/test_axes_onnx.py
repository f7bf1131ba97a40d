"""Batch axes with real ONNX graphs: inferred at build from the graph, then served by ONNX Runtime with a state
stacked on axis 1 and a scalar input shared by a batch (a silero-vad-like toy, and silero-vad itself)."""

from __future__ import annotations

import concurrent.futures
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import xinfer_sdk as xs
from xinfer_sdk.bundle import Manifest, open_bundle, register, save_manifest
from xinfer_sdk.profiles import load_profile
from xinfer_sdk.runtime.backends.onnxruntime import OnnxRuntimeBackend
from xinfer_sdk.runtime.batcher import FUTURE, Batcher
from xinfer_sdk.runtime.validate import InputValidator

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from converters import graph  # noqa: E402

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def toy_vad(path: Path, batch: str = "") -> Path:
    """y = x * sr (float), stateN = state + 1; x [B, 3], state [2, B, 4], sr [] (B named `batch`, or unnamed)."""
    b = batch or None
    nodes = [helper.make_node("Cast", ["sr"], ["srf"], to=F), helper.make_node("Mul", ["x", "srf"], ["y"]),
             helper.make_node("Add", ["state", "one"], ["stateN"])]
    g = helper.make_graph(nodes, "vad", [helper.make_tensor_value_info("x", F, [b, 3]),
                                         helper.make_tensor_value_info("state", F, [2, b, 4]),
                                         helper.make_tensor_value_info("sr", I64, [])],
                          [helper.make_tensor_value_info("y", F, [b, 3]),
                           helper.make_tensor_value_info("stateN", F, [2, b, 4])],
                          [helper.make_tensor("one", F, [], [1.0])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("batch", ["batch", ""])
def test_build_finds_the_state_batched_on_axis_1_and_the_scalar_unbatched(tmp_path, batch):
    ins, outs, batched = graph.io_specs(graph.load(toy_vad(tmp_path / "vad.onnx", batch)))
    assert batched
    assert [(s.name, s.batch_axis) for s in ins] == [("x", 0), ("state", 1), ("sr", None)]
    assert [(s.name, s.batch_axis) for s in outs] == [("y", 0), ("stateN", 1)]


def test_a_graph_whose_batch_is_fixed_at_1_does_not_batch(tmp_path):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", F, [1, None])],
                          [helper.make_tensor_value_info("y", F, [1, None])])
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    _, _, batched = graph.io_specs(graph.load(path))
    assert not batched


def bundle_of(onnx_path: Path, root: Path) -> Path:
    """A bundle around an unchanged graph with the IO spec build infers (no conversion steps)."""
    root.mkdir()
    shutil.copyfile(onnx_path, root / "model.onnx")
    ins, outs, batched = graph.io_specs(graph.load(onnx_path))
    m = Manifest(name=onnx_path.stem, inputs=ins, outputs=outs, precision="fp32", max_batch_size=32 if batched else 0,
                 profile={}, batch={})
    register(root, m, "model.onnx", role="model")
    save_manifest(root, m)
    return root


def serve_all(root: Path, reqs: list[dict], max_batch_size: int) -> tuple[list[dict], int]:
    """The batching core over ONNX Runtime on the bundle's own layout (no sequence handling: the state is an input
    like any other here), every request queued at once; (outputs, batches run)."""
    bundle = open_bundle(root)
    m = bundle.manifest
    cpu = load_profile("cpu")
    b = Batcher(lambda i: OnnxRuntimeBackend(bundle, profile=cpu, device="cpu", threads=1),
                policy=xs.BatchPolicy(max_batch_size=max_batch_size, max_batch_delay="20ms"),
                input_names=[s.name for s in m.inputs], inputs=m.inputs, outputs=m.outputs)
    v = InputValidator(m.inputs, batched=True)
    try:
        futs = []
        for r in reqs:
            f: concurrent.futures.Future = concurrent.futures.Future()
            b.enqueue(*v(r), FUTURE, f)
            futs.append(f)
        return [f.result(timeout=30) for f in futs], b.stats.snapshot()["batches"]
    finally:
        b.close()


def run_alone(path: Path, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_served_states_batch_on_axis_1_and_match_each_request_run_alone(tmp_path):
    path = toy_vad(tmp_path / "vad.onnx")
    rng = np.random.default_rng(0)
    reqs = [{"x": rng.standard_normal((1, 3), dtype=np.float32), "state": rng.standard_normal((2, 1, 4), dtype=np.float32),
             "sr": np.array(8000 if i % 4 == 0 else 16000, dtype=np.int64)} for i in range(12)]
    outs, batches = serve_all(bundle_of(path, tmp_path / "vad.xinfer"), reqs, 16)
    for r, out in zip(reqs, outs):
        y, state = run_alone(path, r)
        np.testing.assert_array_equal(out["y"], y)
        np.testing.assert_array_equal(out["stateN"], state)
    assert batches < len(reqs)  # merged along axis 1, the two sample rates apart


def test_silero_vad_streams_batched_on_the_state_axis_match_the_model_run_alone(tmp_path):
    from corpus import SILERO_VAD

    path = SILERO_VAD.fetch()
    rng = np.random.default_rng(1)
    reqs = [{"input": (rng.standard_normal((1, 576)) * 0.1).astype(np.float32),
             "state": (rng.standard_normal((2, 1, 128)) * 0.1).astype(np.float32),
             "sr": np.array(16000, dtype=np.int64)} for _ in range(32)]
    outs, batches = serve_all(bundle_of(path, tmp_path / "vad.xinfer"), reqs, 32)
    for r, out in zip(reqs, outs):
        prob, state = run_alone(path, r)
        np.testing.assert_allclose(out["output"], prob, atol=1e-5)
        np.testing.assert_allclose(out["stateN"], state, atol=1e-5)
    assert batches < len(reqs)
