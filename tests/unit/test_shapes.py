from __future__ import annotations

import pytest

from xinfer_sdk.errors import UserError
from xinfer_sdk.shapes import ShapeRange, check_names, parse_shapes


def test_three_part_range():
    r = parse_shapes("input_ids:1x8..32x128..64x512")["input_ids"]
    assert r == ShapeRange((1, 8), (32, 128), (64, 512))
    assert r.text() == "1x8..32x128..64x512"


def test_two_parts_opt_is_max_and_fixed_shape():
    s = parse_shapes(["a:1x3..8x3", "b:4x4"])
    assert s["a"].opt == (8, 3) and s["b"].min == s["b"].max == (4, 4)


def test_comma_separated_entries():
    assert set(parse_shapes("a:1..4,b:2x2")) == {"a", "b"}


@pytest.mark.parametrize("bad", ["nocolon", "a:1x?", "a:0x3", "a:8..4", "a:1x2..1x2x3", "a:1..2..3..4"])
def test_bad_specs_are_user_errors(bad):
    with pytest.raises(UserError):
        parse_shapes(bad)


def test_unknown_input_name_lists_the_real_ones():
    with pytest.raises(UserError, match="no input 'tokens'; its inputs are input_ids, attention_mask"):
        check_names(parse_shapes("tokens:1x8"), ["input_ids", "attention_mask"])
