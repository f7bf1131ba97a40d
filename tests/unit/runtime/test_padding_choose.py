"""Which queued requests share a padded batch (PadPlan.choose) and the cost model it is given (PadCost)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.runtime.padding import PadCost, PadPlan

PLAN = PadPlan({"inputs": {"ids": {"axis": 1}}, "buckets": [16, 32, 64, 128]}, [TensorSpec("ids", "int64", (-1, -1))],
               [])


def queue(*lengths):
    return [SimpleNamespace(extent=n, n=1, name=f"r{i}") for i, n in enumerate(lengths)]


def lengths(batch):
    return [r.extent for r in batch]


def test_without_a_cost_model_only_the_heads_bucket_is_merged():
    q = queue(20, 5, 30, 40, 17)
    assert lengths(PLAN.choose(q, 8, None)) == [20, 30, 17]


def test_with_no_fixed_cost_only_the_heads_bucket_is_merged():
    q = queue(20, 5, 30, 40, 17)
    assert lengths(PLAN.choose(q, 8, 0.0)) == [20, 30, 17]


def test_a_large_fixed_cost_lets_shorter_buckets_join_but_never_a_longer_one():
    q = queue(30, 5, 20, 9, 40)
    assert sorted(lengths(PLAN.choose(q, 8, 1e6))) == [5, 9, 20, 30]


def test_the_oldest_request_is_always_in_the_batch_and_room_is_respected():
    q = queue(120, *[5] * 10)
    batch = PLAN.choose(q, 4, 1e6)
    assert batch[0] is q[0] and len(batch) == 4


def test_the_longest_shorter_requests_join_first():
    q = queue(60, 10, 20, 18, 30)
    assert lengths(PLAN.choose(q, 3, 1e6)) == [60, 30, 20]


def test_a_shorter_request_joins_when_its_padding_costs_less_than_half_its_share_of_its_own_run():
    # head 60 (bucket 64); a 20 (bucket 32) pays 32 tokens of padding, 2 x 32 < 100 / 1 request in its bucket
    assert lengths(PLAN.choose(queue(60, 20), 8, 100.0)) == [60, 20]


def test_a_shorter_request_stays_when_its_own_bucket_shares_the_fixed_cost():
    # two requests queued in bucket 32: each would pay 100 / 2 = 50 there, padding costs 2 x 32 = 64
    assert lengths(PLAN.choose(queue(60, 20, 25), 8, 100.0)) == [60]


def linear(cost, tokens):
    for t in tokens:
        cost.observe(t, t, 1e-3 + 1e-5 * t)


def test_the_cost_model_recovers_the_fixed_cost_in_tokens():
    cost = PadCost()
    linear(cost, [16, 512, 64, 2048, 128, 1024, 300, 4096, 40, 700] * 3)
    assert cost.overhead == pytest.approx(100.0, rel=1e-3)
    assert cost.fit()["us_per_token"] == pytest.approx(10.0, rel=1e-3)


def test_no_estimate_before_enough_batches():
    cost = PadCost(warm=8)
    linear(cost, [16, 512, 64, 2048])
    assert cost.overhead is None


def test_a_fit_without_a_positive_slope_keeps_the_last_estimate():
    cost = PadCost(warm=2)
    for t in (16, 512, 64, 2048):
        cost.observe(t, t, 1.0 / t)  # bigger batches faster: noise, not a cost model
    assert cost.overhead is None


def test_batches_all_alike_keep_the_last_estimate():
    cost = PadCost(warm=2)
    linear(cost, [16, 2048, 16, 2048])
    before = cost.overhead
    for _ in range(2000):
        cost.observe(512, 512, 0.5)  # one size only, and a time that fits no line through the rest
    assert cost.overhead == before


def test_a_pinned_cost_model_does_not_learn_but_counts_the_padding():
    cost = PadCost(overhead=50.0)
    cost.observe(64, 40, 1.0)
    assert cost.overhead == 50.0 and cost.fit()["padded_per_real"] == pytest.approx(1.6)


def test_a_shorter_request_alone_in_its_bucket_joins_though_a_longer_one_of_a_crowded_bucket_stays():
    # bucket 32 holds two (share 50 < padding 2 x 32); bucket 16 holds one (share 100 > padding 2 x 48)
    assert lengths(PLAN.choose(queue(60, 20, 25, 10), 8, 100.0)) == [60, 10]
