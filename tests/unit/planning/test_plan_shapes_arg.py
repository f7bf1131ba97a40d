"""Issue 18 item 6: ``xs.plan(shapes=...)`` takes the CLI text, a list of entries or a dict, and refuses
anything else with one UserError line (never a raw ValueError / AttributeError)."""

from __future__ import annotations

import pytest

from xinfer_sdk.errors import UserError
from xinfer_sdk.shapes import ShapeRange, coerce_shapes

R = ShapeRange((1, 8), (32, 128), (64, 512))


@pytest.mark.parametrize("given", [
    "ids:1x8..32x128..64x512",
    ["ids:1x8..32x128..64x512"],
    ("ids:1x8..32x128..64x512",),
    {"ids": "1x8..32x128..64x512"},
    {"ids": {"min": [1, 8], "opt": [32, 128], "max": [64, 512]}},
    {"ids": R},
])
def test_every_accepted_form_gives_the_same_range(given):
    assert coerce_shapes(given) == {"ids": R}


def test_a_list_of_ints_is_a_fixed_shape():
    assert coerce_shapes({"x": [1, 3, 224, 224]}) == {"x": ShapeRange.fixed((1, 3, 224, 224))}
    assert coerce_shapes({"x": {"min": [1, 3], "max": [4, 3]}}) == {"x": ShapeRange((1, 3), (4, 3), (4, 3))}


@pytest.mark.parametrize("bad,match", [
    (5, r"shapes= got int 5; expected 'NAME:MIN\.\.OPT\.\.MAX'"),
    (["x", 1], r"shapes= got list"),
    ({"x": 3}, r"shapes= input 'x': 3 is not a shape"),
    ({"x": "x:1x3"}, r"give only the shape"),
    ({"x": [1, 0]}, r"every dimension must be >= 1"),
    ({"x": [1.5, 2]}, r"expected a shape like \[1, 3, 224, 224\]"),
    ({"x": {"min": [1], "mx": [2]}}, r"is not a shape"),
    ({3: "1x2"}, r"keys must be input names"),
    ({"x": "1xq"}, r"'1xq' is not a shape like 32x128"),
    ("x", r"expected NAME:MIN\.\.OPT\.\.MAX"),
])
def test_anything_else_is_one_user_error_line(bad, match):
    with pytest.raises(UserError, match=match) as info:
        coerce_shapes(bad)
    assert "\n" not in str(info.value)


def test_plan_takes_a_dict_and_refuses_a_number(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx_models import make_mlp_onnx

    import xinfer_sdk as xs

    make_mlp_onnx(tmp_path / "mlp.onnx")
    a = xs.plan(tmp_path / "mlp.onnx", profiles="cpu", shapes={"input": "1x8"}, sim_requests=300, screen=100)
    b = xs.plan(tmp_path / "mlp.onnx", profiles="cpu", shapes="input:1x8", sim_requests=300, screen=100)
    assert [p.profile.name for p in a.plans] == [p.profile.name for p in b.plans] == ["cpu"]
    with pytest.raises(UserError, match="shapes= got int"):
        xs.plan(tmp_path / "mlp.onnx", profiles="cpu", shapes=5)
