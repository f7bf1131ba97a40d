"""The state declaration: detection by name, config / manifest precedence, and the request parameters."""

from __future__ import annotations

import pytest

from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.errors import InvalidInput, UserError
from xinfer_sdk.runtime.sequence import detect, resolve, sequence_params


def t(name, shape, dtype="float32"):
    return TensorSpec(name, dtype, tuple(shape))


SILERO_IN = [t("input", [-1, -1]), t("state", [2, -1, 128]), t("sr", [], "int64")]
SILERO_OUT = [t("output", [-1, 1]), t("stateN", [-1, -1, -1])]


@pytest.mark.parametrize("ins,outs,want", [
    (["state"], ["stateN"], {"state": "stateN"}),
    (["h", "c"], ["hn", "cn"], {"h": "hn", "c": "cn"}),
    (["h0"], ["h0n"], {"h0": "h0n"}),
    (["cache_in"], ["cache_out"], {"cache_in": "cache_out"}),
    (["state1", "state2"], ["state1N", "state2N"], {"state1": "state1N", "state2": "state2N"}),
    (["x"], ["y"], {}),
])
def test_pairs_are_found_by_name(ins, outs, want):
    specs_in = [t(n, [-1, 4]) for n in ins]
    specs_out = [t(n, [-1, 4]) for n in outs]
    assert detect(specs_in, specs_out) == want


def test_a_dtype_mismatch_is_not_a_state_pair():
    assert detect([t("state", [-1, 4])], [t("stateN", [-1, 4], "float16")]) == {}


def test_silero_state_batches_on_its_dynamic_axis():
    spec = resolve(SILERO_IN, SILERO_OUT)
    (p,) = spec.pairs
    assert (p.input, p.output, p.axis, p.shape) == ("state", "stateN", 1, (2, 1, 128))


def test_config_wins_over_the_manifest():
    extra = {"sequence": {"max_sequences": 5}}
    assert resolve(SILERO_IN, SILERO_OUT, manifest_extra=extra).max_sequences == 5
    spec = resolve(SILERO_IN, SILERO_OUT, config={"max_sequences": 9}, manifest_extra=extra)
    assert (spec.max_sequences, spec.source) == (9, "config.yaml")


def test_false_turns_detection_off():
    assert resolve(SILERO_IN, SILERO_OUT, config=False) is None


def test_unknown_state_input_is_named():
    with pytest.raises(UserError, match="state input 'hidden' is not an input of the model"):
        resolve(SILERO_IN, SILERO_OUT, config={"state": {"hidden": "stateN"}})


def test_unknown_key_is_named():
    with pytest.raises(UserError, match="unknown key.*idle_timeout\\b"):
        resolve(SILERO_IN, SILERO_OUT, config={"idle_timeout": 3})


def test_a_state_with_two_dynamic_dims_needs_a_fixed_shape():
    with pytest.raises(UserError, match="only its batch axis"):
        resolve([t("state", [-1, -1])], [t("stateN", [-1, -1])])


@pytest.mark.parametrize("params,want", [
    ({"sequence_id": 7, "sequence_start": True}, (7, True, False)),
    ({"sequence_id": "mic-1", "sequence_end": True}, ("mic-1", False, True)),
    ({"sequence_id": {"int64_param": 9}, "sequence_start": {"bool_param": True}}, (9, True, False)),
])
def test_request_parameters(params, want):
    assert sequence_params(params, "m") == want


@pytest.mark.parametrize("params", [{}, {"sequence_id": 0}, {"sequence_id": ""}, {"sequence_id": True}])
def test_a_request_without_a_sequence_id_is_refused(params):
    with pytest.raises(InvalidInput, match="sequence_id"):
        sequence_params(params, "vad")
