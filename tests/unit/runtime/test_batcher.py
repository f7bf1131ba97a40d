"""The batching core's contract: Triton dynamic-batcher dispatch, split/reassemble, queue limits, deadlines,
cancellation, drain, and no lost or duplicated results under concurrency."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xinfer_sdk.errors import DeadlineExceeded, InferenceError, QueueFull, ServerClosing
from xinfer_sdk.runtime.batcher import ASYNC, FUTURE


def feed(x):
    x = np.asarray(x, dtype=np.float32)
    return {"x": x}, x.shape[0], (x.shape[1:],)


def submit(b, x, timeout=None):
    f = concurrent.futures.Future()
    b.enqueue(*feed(x), FUTURE, f, timeout=timeout)
    return f


def test_full_batch_goes_out_without_waiting_for_the_delay(make_batcher):
    b, log = make_batcher(max_batch_size=4, max_batch_delay=30.0)
    futs = [submit(b, [[i]]) for i in range(4)]
    results = [f.result(timeout=5) for f in futs]
    assert [r["y"][0, 0] for r in results] == [0, 2, 4, 6]
    assert log == [(4, 1)]


def test_partial_batch_waits_for_max_batch_delay(make_batcher):
    b, log = make_batcher(max_batch_size=8, max_batch_delay=0.2)
    t0 = time.perf_counter()
    submit(b, [[1.0]]).result(timeout=5)
    assert time.perf_counter() - t0 >= 0.19
    assert log == [(1, 1)]


def test_preferred_batch_size_dispatches_early(make_batcher):
    b, log = make_batcher(max_batch_size=8, preferred_batch_sizes=(2,), max_batch_delay=30.0)
    futs = [submit(b, [[i]]) for i in range(2)]
    for f in futs:
        f.result(timeout=5)
    assert log == [(2, 1)]


def test_only_equal_non_batch_shapes_are_merged(make_batcher):
    gate = threading.Event()
    b, log = make_batcher(max_batch_size=16, max_batch_delay=0.05, gate=gate)
    futs = [submit(b, np.ones((1, 3 + (i % 2)))) for i in range(6)]
    gate.set()
    for i, f in enumerate(futs):
        assert f.result(timeout=5)["y"].shape == (1, 3 + (i % 2))
    assert {s[1] for s in log} == {3, 4}
    assert sum(s[0] for s in log) == 6
    assert all(s[0] <= 16 for s in log)


def test_request_above_max_batch_size_is_split_and_reassembled_in_order(make_batcher):
    b, log = make_batcher(max_batch_size=4, max_batch_delay=0.001)
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    out = submit(b, x).result(timeout=5)
    np.testing.assert_array_equal(out["y"], x * 2)
    assert all(s[0] <= 4 for s in log) and sum(s[0] for s in log) == 10


def test_full_queue_refuses_at_once(make_batcher):
    gate = threading.Event()
    b, _ = make_batcher(max_batch_size=1, max_batch_delay=0, max_queue_size=2, gate=gate)
    first = submit(b, [[0]])  # taken by the worker, blocked in the engine
    time.sleep(0.05)
    queued = [submit(b, [[1]]), submit(b, [[2]])]
    with pytest.raises(QueueFull, match="queue is full"):
        submit(b, [[3]])
    gate.set()
    assert [f.result(timeout=5)["y"][0, 0] for f in [first, *queued]] == [0, 2, 4]
    assert b.stats.snapshot()["requests"]["rejected"] == {"queue_full": 1}


def test_deadline_passes_while_queued(make_batcher):
    gate = threading.Event()
    b, log = make_batcher(max_batch_size=1, max_batch_delay=0, gate=gate)
    blocker = submit(b, [[0]])
    time.sleep(0.05)
    late = submit(b, [[1]], timeout=0.01)
    time.sleep(0.05)
    gate.set()
    blocker.result(timeout=5)
    with pytest.raises(DeadlineExceeded):
        late.result(timeout=5)
    assert log == [(1, 1)]  # the late request never reached the engine


def test_cancelled_future_never_runs(make_batcher):
    gate = threading.Event()
    b, log = make_batcher(max_batch_size=1, max_batch_delay=0, gate=gate)
    blocker = submit(b, [[0]])
    time.sleep(0.05)
    victim = submit(b, [[5]])
    assert victim.cancel()
    gate.set()
    blocker.result(timeout=5)
    b.close(timeout=5)
    assert log == [(1, 1)]
    assert b.stats.snapshot()["requests"]["failed"].get("Cancelled") == 1


def test_engine_error_fails_that_batch_only(make_batcher):
    b, _ = make_batcher(max_batch_size=8, max_batch_delay=0.02, fail_on=3)
    bad = [submit(b, [[i]]) for i in range(3)]
    with pytest.raises(InferenceError, match="engine exploded"):
        bad[0].result(timeout=5)
    for f in bad[1:]:
        with pytest.raises(InferenceError):
            f.result(timeout=5)
    assert submit(b, [[7]]).result(timeout=5)["y"][0, 0] == 14  # the worker survived


def test_close_drains_every_accepted_request_and_refuses_new_ones(make_batcher):
    b, _ = make_batcher(max_batch_size=4, max_batch_delay=10.0, delay=0.01)
    futs = [submit(b, [[i]]) for i in range(10)]
    assert b.close(drain=True, timeout=10)
    assert [f.result(timeout=0)["y"][0, 0] for f in futs] == [2 * i for i in range(10)]
    with pytest.raises(ServerClosing):
        submit(b, [[1]])
    assert b.in_flight == 0


def test_close_without_drain_answers_queued_requests_with_an_error(make_batcher):
    gate = threading.Event()
    b, _ = make_batcher(max_batch_size=1, max_batch_delay=0, gate=gate)
    running = submit(b, [[0]])
    time.sleep(0.05)
    queued = [submit(b, [[i]]) for i in range(1, 4)]
    threading.Timer(0.1, gate.set).start()
    b.close(drain=False, timeout=5)
    assert running.result(timeout=5)["y"][0, 0] == 0
    for f in queued:
        with pytest.raises(ServerClosing):
            f.result(timeout=1)


def test_async_sinks_resolve_on_their_loop(make_batcher):
    b, log = make_batcher(max_batch_size=8, max_batch_delay=0.005)

    async def main():
        loop = asyncio.get_running_loop()
        futs = []
        for i in range(20):
            f = loop.create_future()
            b.enqueue(*feed([[i]]), ASYNC, f, loop)
            futs.append(f)
        return await asyncio.gather(*futs)

    results = asyncio.run(main())
    assert [r["y"][0, 0] for r in results] == [2 * i for i in range(20)]


def test_stats_record_batches_waits_and_depth(make_batcher):
    b, _ = make_batcher(max_batch_size=4, max_batch_delay=0.001)
    for f in [submit(b, [[i]]) for i in range(8)]:
        f.result(timeout=5)
    s = b.stats.snapshot()
    assert s["requests"]["success"] == 8 and s["samples"] == 8
    assert s["batch_size"]["count"] == s["batches"] >= 2
    assert s["queue_wait_s"]["count"] == 8 and s["queue_depth"] == 0 and s["in_flight"] == 0


def test_many_threads_random_sizes_no_lost_or_duplicated_results(make_batcher):
    b, log = make_batcher(max_batch_size=8, max_batch_delay=0.0005, device_concurrency=3, max_queue_size=0)
    errors = []

    def client(seed):
        rng = random.Random(seed)
        for k in range(40):
            n = rng.choice([1, 1, 2, 3, 5, 9, 17])
            x = (np.arange(n, dtype=np.float32) + seed * 100000 + k * 100).reshape(n, 1)
            try:
                out = submit(b, x).result(timeout=10)
                np.testing.assert_array_equal(out["y"], x * 2)
            except Exception as exc:  # collected and reported below
                errors.append(exc)

    threads = [threading.Thread(target=client, args=(s,)) for s in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(s[0] <= 8 for s in log)
    total = b.stats.snapshot()
    assert total["requests"]["success"] == 16 * 40 and total["in_flight"] == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=30), max_batch=st.integers(1, 8),
       workers=st.integers(1, 3), preferred=st.sets(st.integers(1, 8), max_size=2))
def test_property_every_request_gets_exactly_its_own_answer(make_batcher, sizes, max_batch, workers, preferred):
    b, log = make_batcher(max_batch_size=max_batch, max_batch_delay=0.0005, device_concurrency=workers,
                          preferred_batch_sizes=tuple(p for p in preferred if p <= max_batch), max_queue_size=0)
    futs, xs = [], []
    offset = 0
    for n in sizes:
        x = (np.arange(n, dtype=np.float32) + offset).reshape(n, 1)
        offset += n
        xs.append(x)
        futs.append(submit(b, x))
    for x, f in zip(xs, futs):
        np.testing.assert_array_equal(f.result(timeout=10)["y"], x * 2)
    assert all(s[0] <= max_batch for s in log)
    assert sum(s[0] for s in log) == sum(sizes)
