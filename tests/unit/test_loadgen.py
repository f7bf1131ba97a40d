"""The load generator's core, driven by test senders (a thread pool with a known service time)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import pytest

from xinfer_sdk.errors import QueueFull
from xinfer_sdk.loadgen import closed_loop, model_sender, open_loop


@pytest.fixture
def pool():
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as ex:
        yield ex


def sleeper(pool, seconds):
    return lambda: pool.submit(time.sleep, seconds)


def test_closed_loop_throughput_is_concurrency_over_latency(pool):
    r = closed_loop(sleeper(pool, 0.02), concurrency=4, duration=0.6, warmup=0.1)
    assert r.mode == "closed" and r.concurrency == 4 and not r.errors
    assert r.p50 == pytest.approx(0.02, rel=0.5)  # sleep overshoots a little, never undershoots
    assert r.p50 >= 0.02 and r.p99 >= r.p50
    assert 50 <= r.throughput <= 4 / 0.02 * 1.05  # at most 200/s: 4 callers, 20 ms each
    assert r.completed == r.sent


def test_open_loop_keeps_the_offered_rate(pool):
    r = open_loop(sleeper(pool, 0.001), rate=200, duration=1.0, warmup=0.1, poisson=False)
    assert r.mode == "fixed" and r.sent == pytest.approx(200, abs=3)
    assert r.completed == r.sent and r.throughput == pytest.approx(200, rel=0.05)
    p = open_loop(sleeper(pool, 0.001), rate=300, duration=1.0, warmup=0.1, seed=1)
    assert p.mode == "poisson" and 200 < p.sent < 400


def test_errors_are_counted_by_type_and_async_senders_work():
    async def ok():
        await asyncio.sleep(0.001)

    async def full():
        raise QueueFull("queue is full")

    r = closed_loop(ok, concurrency=2, duration=0.2, warmup=0.0)
    assert r.completed > 10 and not r.errors
    bad = open_loop(full, rate=100, duration=0.3, warmup=0.0, poisson=False)
    assert bad.completed == 0 and bad.errors == {"QueueFull": bad.sent} and bad.p99 is None


def test_open_loop_counts_unfinished_requests_as_timeouts():
    async def hang():
        await asyncio.sleep(10)

    r = open_loop(hang, rate=50, duration=0.2, warmup=0.0, drain=0.1)
    assert r.errors.get("Timeout") == r.sent > 0


def test_model_sender_uses_submit_or_infer_async():
    class FakeModel:
        def submit(self, inputs):
            f = concurrent.futures.Future()
            f.set_result(inputs)
            return f

        async def infer_async(self, inputs):
            return inputs

    m = FakeModel()
    assert model_sender(m, {"x": 1})().result() == {"x": 1}
    assert asyncio.run(model_sender(m, {"x": 2}, use_async=True)()) == {"x": 2}
    with pytest.raises(ValueError):
        closed_loop(model_sender(m, {}), concurrency=0, duration=0.1)
