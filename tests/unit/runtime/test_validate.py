from __future__ import annotations

import numpy as np
import pytest

from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.errors import InvalidInput
from xinfer_sdk.runtime.validate import InputValidator, check_finite

SPECS = [TensorSpec("input_ids", "int64", (-1, -1)), TensorSpec("pixel", "float32", (-1, 3, 4))]


@pytest.fixture
def v():
    return InputValidator(SPECS, batched=True)


def ok_inputs(n=2, seq=5):
    return {"input_ids": np.zeros((n, seq), np.int64), "pixel": np.zeros((n, 3, 4), np.float32)}


def test_good_inputs_give_batch_size_and_signature(v):
    feeds, n, sig = v(ok_inputs(3, 7))
    assert n == 3 and sig == ((7,), (3, 4))


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("pixel"), "missing input(s) 'pixel'"),
    (lambda d: d.update(extra=np.zeros(1)), "unknown input(s) 'extra'"),
    (lambda d: d.update(pixel=np.zeros((2, 3, 4), np.float64)), "input 'pixel': expected dtype float32, got float64"),
    (lambda d: d.update(pixel=np.zeros((2, 3, 5), np.float32)), "input 'pixel': dimension 2 must be 4"),
    (lambda d: d.update(pixel=np.zeros((2, 3), np.float32)), "expected 3 dimensions"),
    (lambda d: d.update(pixel=np.zeros((3, 3, 4), np.float32)), "batch size 3 differs"),
    (lambda d: d.update(input_ids=np.zeros((2, 0), np.int64)), "dimension 1 is 0"),
    (lambda d: d.update(input_ids=[["a"]]), "cannot convert"),
])
def test_each_mistake_names_the_input_and_the_expectation(v, mutate, message):
    d = ok_inputs()
    mutate(d)
    with pytest.raises(InvalidInput) as info:
        v(d)
    assert message in str(info.value)


def test_not_a_dict(v):
    with pytest.raises(InvalidInput, match="must be a dict"):
        v([1, 2, 3])


def test_python_lists_are_converted_to_the_declared_dtype():
    v = InputValidator([TensorSpec("x", "float32", (-1, 2))], batched=True)
    feeds, n, _ = v({"x": [[1, 2], [3, 4]]})
    assert feeds["x"].dtype == np.float32 and n == 2


def test_nan_is_refused_when_asked():
    with pytest.raises(InvalidInput, match="NaN or Inf"):
        check_finite({"x": np.array([1.0, np.nan], np.float32)})
