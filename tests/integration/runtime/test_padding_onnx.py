"""Padded batching with real graphs: the build-time check (converters/padding.py) and serving through xs.load."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import xinfer_sdk as xs
from xinfer_sdk.bundle import Manifest, register, save_manifest
from xinfer_sdk.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from converters import graph  # noqa: E402
from converters.padding import check_padding, parse_pad  # noqa: E402

F, I64 = TensorProto.FLOAT, TensorProto.INT64
DECL = {"inputs": {"ids": {"axis": 1, "value": 0}, "mask": {"axis": 1, "value": 0}}, "buckets": [8, 16, 32],
        "outputs": {"h": 1}}


def encoder(path: Path, masked: bool = True) -> Path:
    """h = emb[ids] [B, S, 4]; pooled [B, 4] = attention pooling over S with an additive mask (or, unmasked, the
    mean over S, which padding changes)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((50, 4)).astype(np.float32), "emb"),
             numpy_helper.from_array(rng.standard_normal((4, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(-10000.0, np.float32), "neg"),
             numpy_helper.from_array(np.array([2], np.int64), "ax2"),
             numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    n = helper.make_node
    nodes = [n("Gather", ["emb", "ids"], ["h"])]
    if masked:
        nodes += [n("MatMul", ["h", "w"], ["s3"]), n("Squeeze", ["s3", "ax2"], ["s"]),
                  n("Cast", ["mask"], ["mf"], to=F), n("Sub", ["one", "mf"], ["inv"]), n("Mul", ["inv", "neg"], ["madd"]),
                  n("Add", ["s", "madd"], ["sm"]), n("Softmax", ["sm"], ["p"], axis=1),
                  n("Unsqueeze", ["p", "ax2"], ["p3"]), n("Mul", ["h", "p3"], ["hp"]),
                  n("ReduceSum", ["hp", "ax1"], ["pooled"], keepdims=0)]
    else:
        nodes += [n("ReduceMean", ["h"], ["pooled"], axes=[1], keepdims=0)]
    outs = [helper.make_tensor_value_info("h", F, ["batch", "seq", 4]),
            helper.make_tensor_value_info("pooled", F, ["batch", 4])]
    g = helper.make_graph(nodes, "enc", [helper.make_tensor_value_info(x, I64, ["batch", "seq"]) for x in ("ids", "mask")],
                          outs, inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def samples(count: int = 12, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        ids = rng.integers(1, 50, (1, int(rng.integers(3, 30))), dtype=np.int64)
        out.append({"ids": ids, "mask": np.ones_like(ids)})
    return out


def specs(path: Path):
    ins, outs, _ = graph.io_specs(graph.load(path))
    return ins, outs


def test_a_masked_model_passes_the_padding_check(tmp_path):
    path = encoder(tmp_path / "enc.onnx")
    report = check_padding(path, DECL, *specs(path), samples(), thresholds={"min_cosine": 0.9999})
    assert report["padded_batches"] > 0
    assert report["outputs"]["pooled"]["max_abs_error"] < 1e-5


def test_a_model_that_reads_the_padding_is_refused_naming_the_output(tmp_path):
    path = encoder(tmp_path / "enc.onnx", masked=False)
    with pytest.raises(UserError, match=r"--pad: output 'pooled' differs when padded: cosine"):
        check_padding(path, DECL, *specs(path), samples(), thresholds={"min_cosine": 0.9999})


def test_an_uncropped_sequence_output_is_refused_with_what_to_do(tmp_path):
    path = encoder(tmp_path / "enc.onnx")
    with pytest.raises(UserError, match=r"output 'h' .* has shape .*crop it"):
        check_padding(path, {**DECL, "outputs": {}}, *specs(path), samples(), thresholds={"min_cosine": 0.9999})


def test_pad_takes_an_inline_mapping_or_a_file(tmp_path):
    inline = "{inputs: {ids: {axis: 1, value: 0}}, buckets: [8, 16]}"
    assert parse_pad(inline)["buckets"] == [8, 16]
    f = tmp_path / "pad.yaml"
    f.write_text("padding:\n  inputs: {ids: {axis: 1}}\n  buckets: [8]\n")
    assert parse_pad(str(f)) == {"inputs": {"ids": {"axis": 1}}, "buckets": [8]}
    with pytest.raises(UserError, match="--pad: expected a mapping"):
        parse_pad("[1, 2]")


def test_served_padded_requests_of_different_lengths_get_their_unpadded_answers(tmp_path):
    path = encoder(tmp_path / "enc.onnx")
    ins, outs = specs(path)
    root = tmp_path / "enc.xinfer"
    root.mkdir()
    shutil.copyfile(path, root / "model.onnx")
    m = Manifest(name="enc", inputs=ins, outputs=outs, precision="fp32", max_batch_size=16, profile={}, batch={},
                 padding=DECL)
    register(root, m, "model.onnx", role="model")
    save_manifest(root, m)
    reqs = samples(24)
    with xs.load(root, profile="cpu", batching=xs.BatchPolicy(max_batch_size=16, max_batch_delay="20ms")) as model:
        async def all_at_once():
            return await asyncio.gather(*(model.infer_async(r) for r in reqs))

        got = asyncio.run(all_at_once())
        stats = model.stats()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for r, out in zip(reqs, got):
        h, pooled = sess.run(["h", "pooled"], r)
        assert out["h"].shape == h.shape
        np.testing.assert_allclose(out["h"], h, atol=1e-6)
        np.testing.assert_allclose(out["pooled"], pooled, atol=1e-5)
    assert stats["batches"] < len(reqs)
