"""Calibration / evaluation data: every accepted source, and one clear error per kind of mistake."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from xinfer_sdk.converters import calibration

from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.errors import CalibrationError

TOKENS = [TensorSpec("input_ids", "int64", (-1, -1), ("batch", "seq")),
          TensorSpec("attention_mask", "int64", (-1, -1), ("batch", "seq"))]
IMAGE = [TensorSpec("input", "float32", (-1, 3, 4, 4), ("batch", None, None, None))]


def _tokens(n, seq=6):
    return {"input_ids": np.arange(n * seq).reshape(n, seq) % 50, "attention_mask": np.ones((n, seq), np.int64)}


def test_npz_by_input_name_with_labels(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, **_tokens(10), labels=np.arange(10) % 3)
    ds = calibration.load(path, TOKENS, batched=True)
    assert ds.count == 10 and ds.has_labels and ds.label_array().tolist() == [i % 3 for i in range(10)]
    assert ds.source["kind"] == "npz" and len(ds.source["sha256"]) == 64
    assert ds.chunks[0]["input_ids"].dtype == np.int64  # the int32/int64 of np.arange cast safely
    batches = list(ds.batches(4))
    assert [b["input_ids"].shape[0] for b in batches] == [4, 4, 2]


def test_limit_split_and_fingerprint(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, **_tokens(10))
    ds = calibration.load(path, TOKENS, batched=True, limit=8)
    assert ds.count == 8
    calib, held = ds.split(2)
    assert (calib.count, held.count) == (6, 2)
    assert np.array_equal(held.chunks[0]["input_ids"], ds.chunks[0]["input_ids"][6:])
    assert calib.fingerprint() != held.fingerprint() and calib.fingerprint() == ds.take(6).fingerprint()


def test_single_unnamed_array_maps_to_a_one_input_model(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, np.zeros((5, 3, 4, 4), np.float64))  # key arr_0, float64
    ds = calibration.load(path, IMAGE, batched=True)
    assert ds.count == 5 and ds.chunks[0]["input"].dtype == np.float32


def test_folder_of_npy_per_input_and_per_sample(tmp_path):
    per_input = tmp_path / "named"
    per_input.mkdir()
    for k, v in _tokens(4).items():
        np.save(per_input / f"{k}.npy", v)
    assert calibration.load(per_input, TOKENS, batched=True).count == 4
    samples = tmp_path / "samples"
    samples.mkdir()
    for i in range(3):
        np.save(samples / f"{i:03d}.npy", np.full((3, 4, 4), i, np.float32))  # one sample each (no batch axis)
    ds = calibration.load(samples, IMAGE, batched=True)
    assert ds.count == 3 and [float(c["input"].mean()) for c in ds.chunks] == [0.0, 1.0, 2.0]
    assert ds.source["kind"] == "npy-folder" and ds.source["files"] == 3


def test_module_function_yielding_dicts(tmp_path, monkeypatch):
    (tmp_path / "mycalib.py").write_text(
        "import numpy as np\n"
        "def data():\n"
        "    for i in range(100):\n"
        "        yield {'input_ids': np.full(6, i), 'attention_mask': np.ones(6, np.int64)}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ds = calibration.load("mycalib:data", TOKENS, batched=True, limit=7)
    assert ds.count == 7 and ds.source == {"what": "mycalib:data", "kind": "function", "function": "mycalib:data"}
    sys.modules.pop("mycalib", None)


@pytest.mark.parametrize("data, match", [
    ({"input_ids": np.zeros((2, 6), np.int64)}, "no data for input.*attention_mask"),
    ({"input_ids": np.zeros((2, 6)), "attention_mask": np.ones((2, 6))}, "is float64, the model takes int64"),
    ({"input_ids": np.zeros((2, 6, 1), np.int64), "attention_mask": np.ones((2, 6), np.int64)}, "has shape"),
    ({"input_ids": np.zeros((2, 6), np.int64), "attention_mask": np.ones((3, 6), np.int64)}, "disagree"),
    ({**_tokens(2), "labels": np.zeros(3)}, "3 labels for 2 samples"),
])
def test_mismatches_are_one_clear_error(data, match):
    with pytest.raises(CalibrationError, match=match):
        calibration.load(data, TOKENS, batched=True)


def test_fixed_dims_are_checked_and_missing_sources_named(tmp_path):
    with pytest.raises(CalibrationError, match="axis 2 is 5, the model fixes it to 4"):
        calibration.load({"input": np.zeros((1, 3, 5, 4), np.float32)}, IMAGE, batched=True)
    with pytest.raises(CalibrationError, match="no such file or folder"):
        calibration.load(str(tmp_path / "nope.npz"), IMAGE, batched=True)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CalibrationError, match="not a readable .npz"):
        calibration.load(bad, IMAGE, batched=True)


def test_unbatched_model_feeds_one_sample_at_a_time():
    spec = [TensorSpec("x", "float32", (3, 4))]
    ds = calibration.load({"x": np.zeros((5, 3, 4), np.float32)}, spec, batched=False)
    feeds = list(ds.batches(16))
    assert ds.count == 5 and len(feeds) == 5 and feeds[0]["x"].shape == (3, 4)


def test_synthetic_uses_shapes_then_the_export_example():
    from xinfer_sdk.shapes import parse_shapes

    ds = calibration.synthetic(TOKENS, count=4, shapes=parse_shapes("input_ids:1x5..2x7..4x9"), batched=True,
                               example={"attention_mask": np.ones((2, 7))})
    assert ds.chunks[0]["input_ids"].shape == (4, 7) and ds.chunks[0]["attention_mask"].shape == (4, 7)
    assert set(np.unique(ds.chunks[0]["input_ids"])) <= {0, 1}
    with pytest.raises(CalibrationError, match="dynamic axis 1"):
        calibration.synthetic(TOKENS, count=2, shapes={}, batched=True)
