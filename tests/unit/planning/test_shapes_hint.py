"""A --shapes hint speaks the model's language: its own input name and fixed dims, never another model's example
(issue 16 item 5)."""

from __future__ import annotations

import pytest

from xinfer_sdk.errors import UserError
from xinfer_sdk.graph import resolve_input_shapes

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _state_model():
    """A silero-like recurrent state input: [2, batch, 128] (batch not on axis 0) and a sequence input."""
    g = helper.make_graph([helper.make_node("Identity", ["state"], ["out"])], "s",
                          [helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 128])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, "batch", 128])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_missing_shape_hint_uses_the_inputs_own_name_and_fixed_dims():
    with pytest.raises(UserError) as exc:
        resolve_input_shapes(_state_model(), batch_size=1, shapes=None, which="opt")
    msg = str(exc.value)
    assert "input_ids" not in msg
    assert "--shapes state:2x16x128..2x128x128..2x512x128 (NAME:MIN..OPT..MAX" in msg
    assert "axis 1 'batch'" in msg


def test_the_example_of_the_hint_is_accepted_as_given():
    from xinfer_sdk.shapes import coerce_shapes

    with pytest.raises(UserError) as exc:
        resolve_input_shapes(_state_model(), batch_size=1, shapes=None, which="opt")
    example = str(exc.value).split("--shapes ")[1].split(" ")[0]
    shapes, _ = resolve_input_shapes(_state_model(), batch_size=1, shapes=coerce_shapes(example), which="opt")
    assert shapes == {"state": (2, 128, 128)}
