"""Every --shapes hint uses the model's own input names and dims (issue 16 item 5)."""

from __future__ import annotations

import pytest

from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.errors import UserError
from xinfer_sdk.shapes import concrete_dims, shapes_hint


def test_hint_for_an_image_input_keeps_its_channels_and_names_it():
    x = TensorSpec("x", "float32", (-1, 3, -1, -1))
    assert shapes_hint(x, batched=True) == "--shapes x:1x3x32x32..8x3x224x224..32x3x1280x1280"


def test_hint_for_a_state_batched_on_axis_1():
    state = TensorSpec("state", "float32", (2, -1, 128), batch_axis=1) if "batch_axis" in \
        TensorSpec.__dataclass_fields__ else None
    if state is None:
        pytest.skip("TensorSpec.batch_axis is not in this tree yet")
    assert shapes_hint(state, batched=True, max_batch=16) == "--shapes state:2x1x128..2x8x128..2x16x128"


def test_unsized_dim_error_names_the_input_not_input_ids():
    audio = TensorSpec("input", "float32", (-1, -1))
    with pytest.raises(UserError) as info:
        concrete_dims(audio, batch=1, shapes={}, batched=True)
    assert "input_ids" not in str(info.value.hint) and "--shapes input:1x1..8x128..32x512" in info.value.hint


def test_image_sides_default_only_when_asked():
    x = TensorSpec("x", "float32", (-1, 3, -1, -1))
    assert concrete_dims(x, batch=2, shapes={}, batched=True, image_default=True) == [2, 3, 224, 224]
    with pytest.raises(UserError):
        concrete_dims(x, batch=2, shapes={}, batched=True)
