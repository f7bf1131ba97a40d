"""``xs.build(..., padding=..., output_kinds=...)``: the Python API takes what the CLI's ``--pad`` and
``--output-kind`` give the build (checked on the eval data, recorded in the manifest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx_models import make_mlp_onnx  # noqa: E402

import xinfer_sdk as xs  # noqa: E402
from xinfer_sdk.errors import UserError  # noqa: E402

DECL = {"inputs": {"ids": {"axis": 1, "value": 0}}, "buckets": [8, 16], "outputs": {"h": 1}}


def embedder(path: Path) -> Path:
    """h = emb[ids]: [batch, seq] int64 -> [batch, seq, 4] (per position, so padding changes nothing real)."""
    emb = numpy_helper.from_array(np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32), "emb")
    g = helper.make_graph([helper.make_node("Gather", ["emb", "ids"], ["h"])], "emb",
                          [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
                          [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", "seq", 4])], [emb])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def eval_npz(path: Path) -> Path:
    np.savez(path, ids=np.random.default_rng(1).integers(1, 20, (8, 12), dtype=np.int64))
    return path


@pytest.mark.parametrize("given", [DECL, "{inputs: {ids: {axis: 1, value: 0}}, buckets: [8, 16], outputs: {h: 1}}"])
def test_build_records_the_padding_it_was_given(tmp_path, given):
    b = xs.build(str(embedder(tmp_path / "emb.onnx")), profile="cpu", precision="fp32", output=tmp_path / "e.xinfer",
                 eval=str(eval_npz(tmp_path / "eval.npz")), shapes="ids:1x12", dtypes={"ids": "int64"}, padding=given)
    assert b.manifest.padding["inputs"] == {"ids": {"axis": 1, "value": 0}}
    assert b.manifest.padding["buckets"] == [8, 16]
    assert next(s for s in b.manifest.steps if s.name == "padding").status == "ok"


def test_a_padding_that_is_not_a_mapping_is_refused_before_any_work(tmp_path):
    make_mlp_onnx(tmp_path / "mlp.onnx")
    out = tmp_path / "m.xinfer"
    with pytest.raises(UserError, match="expected a mapping with inputs, buckets and outputs"):
        xs.build(str(tmp_path / "mlp.onnx"), profile="cpu", precision="fp32", output=out, padding="[1, 2]")
    assert not out.exists()


def test_build_takes_output_kinds(tmp_path):
    make_mlp_onnx(tmp_path / "mlp.onnx")
    b = xs.build(str(tmp_path / "mlp.onnx"), profile="cpu", precision="fp32", output=tmp_path / "k.xinfer",
                 output_kinds={"output": "embedding"})
    assert b.manifest.accuracy["outputs"]["output"]["kind"] == "embedding"
