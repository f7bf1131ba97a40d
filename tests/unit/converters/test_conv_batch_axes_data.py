"""Calibration / evaluation data for inputs batched on another axis or not at all (issue 16 item 2: Silero VAD's
state [2, batch, 128] and scalar sr), and synthetic data that looks like the model's input."""

from __future__ import annotations

import numpy as np
import pytest
from xinfer_sdk.converters import calibration
from xinfer_sdk.converters.synthetic import audio_inputs, synthetic

from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.errors import CalibrationError

VAD = [TensorSpec("input", "float32", (-1, -1), batch_axis=0),
       TensorSpec("state", "float32", (2, -1, 128), batch_axis=1),
       TensorSpec("sr", "int64", (), batch_axis=None)]


def _records(n=5):
    rng = np.random.RandomState(0)
    return {"input": rng.randn(n, 576).astype(np.float32), "state": rng.randn(2, n, 128).astype(np.float32),
            "sr": np.array(16000, np.int64)}


def test_state_is_fed_on_axis_1_and_sr_once_per_feed():
    data = _records()
    ds = calibration.load(data, VAD, batched=True)
    assert ds.count == 5 and set(ds.constants) == {"sr"}
    feeds = list(ds.batches(2))
    assert [f["state"].shape for f in feeds] == [(2, 2, 128), (2, 2, 128), (2, 1, 128)]
    assert all(f["sr"].shape == () and int(f["sr"]) == 16000 for f in feeds)
    np.testing.assert_array_equal(feeds[1]["state"], data["state"][:, 2:4])  # the samples, not a slice of axis 0
    np.testing.assert_array_equal(feeds[1]["input"], data["input"][2:4])


def test_held_out_split_keeps_the_axes_and_the_constant():
    ds = calibration.load(_records(10), VAD, batched=True)
    calib, held = ds.split(3)
    assert calib.count == 7 and held.count == 3
    feed = next(held.batches(8))
    assert feed["state"].shape == (2, 3, 128) and int(feed["sr"]) == 16000


def test_an_unbatched_input_given_per_sample_is_refused_with_its_shape():
    bad = {**_records(), "sr": np.full(5, 16000, np.int64)}
    with pytest.raises(CalibrationError, match=r"sr has shape \(5,\); it has no batch axis, so give it once"):
        calibration.load(bad, VAD, batched=True)


def test_records_that_disagree_on_an_unbatched_input_are_refused():
    a, b = _records(), {**_records(), "sr": np.array(8000, np.int64)}
    with pytest.raises(CalibrationError, match="sr has no batch axis, so it must be the same in every record"):
        calibration.load([a, b], VAD, batched=True)


def test_synthetic_data_for_an_audio_model_is_audio_at_16k():
    assert audio_inputs(VAD, batched=True) == ("input", "sr")
    ds = synthetic(VAD, count=4, shapes={}, batched=True)
    feed = next(ds.batches(4))
    assert feed["input"].shape == (4, 512) and np.abs(feed["input"]).max() <= 1.0
    assert feed["state"].shape == (2, 4, 128) and int(feed["sr"]) == 16000
    assert "sr=16000" in ds.source["what"]


def test_synthetic_image_sides_default_and_are_named():
    x = TensorSpec("x", "float32", (-1, 3, -1, -1))
    ds = synthetic([x], count=2, shapes={}, batched=True)
    assert next(ds.batches(2))["x"].shape == (2, 3, 224, 224) and "x at 224x224" in ds.source["what"]
