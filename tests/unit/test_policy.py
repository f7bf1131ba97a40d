from __future__ import annotations

import pytest

from xinfer_sdk.errors import UserError
from xinfer_sdk.policy import BatchPolicy, format_duration, parse_duration


@pytest.mark.parametrize("text, seconds", [("2ms", 0.002), ("500us", 0.0005), ("1.5s", 1.5), (0.01, 0.01),
                                           ("10 ms", 0.01), ("1m", 60.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["fast", "-1ms", True, None, "2 parsecs"])
def test_bad_duration_is_a_user_error(bad):
    with pytest.raises(UserError):
        parse_duration(bad)


def test_seed_config_keys_are_accepted():
    p = BatchPolicy.from_dict({"batch_size": 64, "max_batch_delay": "10ms", "device_concurrency": 2})
    assert (p.max_batch_size, p.max_batch_delay, p.device_concurrency) == (64, 0.01, 2)
    assert BatchPolicy.from_dict({"max_workers": 4}).device_concurrency == 4


def test_preferred_sizes_must_fit():
    with pytest.raises(UserError, match="preferred_batch_sizes"):
        BatchPolicy(max_batch_size=8, preferred_batch_sizes=(16,))


def test_round_trip_dict():
    p = BatchPolicy(max_batch_size=16, preferred_batch_sizes=(4, 8), max_batch_delay="3ms")
    assert BatchPolicy.from_dict(p.to_dict()) == p
    assert format_duration(0.0005) == "500us" and format_duration(0.002) == "2ms"
