"""The batching-core simulator against queueing theory and against the dispatch rules it must follow."""

from __future__ import annotations

import pytest

from xinfer_sdk.planning.queueing import simulate
from xinfer_sdk.policy import BatchPolicy

NO_BATCHING = BatchPolicy(max_batch_size=1, max_batch_delay=0, max_queue_size=0)


def const(service_s):
    return lambda b: (0.0, service_s * b)


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.85])
def test_md1_mean_wait_matches_pollaczek_khinchine(rho):
    # M/D/1: batch size 1, zero delay, deterministic service S: mean wait = rho / (2 mu (1 - rho))
    s = 0.002
    rate = rho / s
    r = simulate(rate, const(s), NO_BATCHING, requests=60000, seed=1)
    theory = rho / (2 * (1 / s) * (1 - rho))
    assert r.mean_wait == pytest.approx(theory, rel=0.06)
    assert r.utilisation == pytest.approx(rho, rel=0.03)
    assert r.mean == pytest.approx(theory + s, rel=0.05)
    assert r.mean_batch == 1.0 and r.rejected == 0.0


def test_mm_like_light_load_latency_is_the_service_time():
    r = simulate(1.0, const(0.001), NO_BATCHING, requests=2000)
    assert r.p50 == pytest.approx(0.001, rel=1e-6)


def test_a_batch_never_exceeds_max_batch_size():
    record: list = []
    pol = BatchPolicy(max_batch_size=8, max_batch_delay=0.001)
    r = simulate(20000, lambda b: (0.0, 0.0002 + 0.00005 * b), pol, requests=20000, record=record)
    assert max(size for _, size, _ in record) == 8 == r.max_batch_seen
    assert all(1 <= size <= 8 for _, size, _ in record)


def test_delay_is_respected_at_light_load():
    # 50 req/s, 5 ms delay: a batch that is not full leaves only when its oldest request has waited 5 ms
    record: list = []
    pol = BatchPolicy(max_batch_size=32, max_batch_delay=0.005)
    simulate(50, const(0.0001), pol, requests=3000, record=record)
    partial = [wait for _, size, wait in record if size < 32]
    assert partial and min(partial) >= 0.005 - 1e-9
    assert max(partial) == pytest.approx(0.005, abs=1e-6)  # and not later, while a worker is free


def test_full_batch_leaves_without_waiting_for_the_delay():
    record: list = []
    pol = BatchPolicy(max_batch_size=4, max_batch_delay=1.0)  # a delay far longer than the queue needs
    simulate(100000, const(0.00001), pol, requests=5000, record=record)
    full = [wait for _, size, wait in record if size == 4]
    assert len(full) > 1000 and max(full) < 0.01


def test_zero_delay_dispatches_whatever_is_queued_as_soon_as_the_worker_is_free():
    record: list = []
    s = 0.001
    simulate(800, const(s), BatchPolicy(max_batch_size=16, max_batch_delay=0), requests=3000, record=record)
    assert max(size for _, size, _ in record) > 1  # requests did pile up behind a busy worker
    for (t0, size0, _), (t1, _, wait1) in zip(record, record[1:]):
        free_at = t0 + s * size0  # one worker: free when its previous batch ends
        assert t1 == pytest.approx(max(free_at, t1 - wait1), abs=1e-9)


def test_preferred_size_dispatches_at_once_and_takes_the_largest_it_can_fill():
    record: list = []
    pol = BatchPolicy(max_batch_size=16, max_batch_delay=1.0, preferred_batch_sizes=(4, 8))
    simulate(5000, const(0.0005), pol, requests=5000, record=record)
    sizes = {size for _, size, _ in record}
    assert sizes <= {4, 8, 16} and 8 in sizes  # never a size that only the 1 s delay could have released
    assert all(wait < 1.0 for _, _, wait in record)


def test_queue_full_rejects_at_once():
    pol = BatchPolicy(max_batch_size=1, max_batch_delay=0, max_queue_size=4)
    r = simulate(5000, const(0.001), pol, requests=4000)  # 5x overload
    assert r.rejected > 0.5
    assert r.p99 < 0.001 * 6  # the accepted ones waited at most for the 4 queued + their own


def test_requests_larger_than_max_batch_are_split_and_complete_together():
    record: list = []
    pol = BatchPolicy(max_batch_size=4, max_batch_delay=0)
    r = simulate(10, const(0.001), pol, requests=500, request_size=10, record=record)
    assert max(size for _, size, _ in record) == 4
    # 10 samples = 4 + 4 + 2 run one after the other on one worker: 10 ms of work
    assert r.p50 == pytest.approx(0.010, rel=1e-6)


def test_gpu_workers_share_the_device_but_overlap_host_work():
    # host 1 ms + device 1 ms per batch of one; two workers on one GPU: device-bound at 1000 batches/s
    pol1 = BatchPolicy(max_batch_size=1, max_batch_delay=0, device_concurrency=1, max_queue_size=0)
    pol2 = pol1.replace(device_concurrency=2)
    svc = lambda b: (0.001, 0.001)  # noqa: E731
    one = simulate(450, svc, pol1, requests=20000)
    two = simulate(900, svc, pol2, requests=20000, shared_device=True)
    assert one.utilisation == pytest.approx(0.45, rel=0.05)
    assert two.utilisation == pytest.approx(0.9, rel=0.05)  # the device is the shared bottleneck
    over = simulate(1100, svc, pol2, requests=20000, shared_device=True)
    assert over.p99 > 20 * two.p99  # beyond the device's 1000/s the queue grows without bound


def test_cpu_workers_do_not_share():
    pol = BatchPolicy(max_batch_size=1, max_batch_delay=0, device_concurrency=2, max_queue_size=0)
    r = simulate(10, lambda b: (0.0, 0.002), pol, requests=2000, shared_device=False)
    assert r.p50 == pytest.approx(0.002, rel=1e-6)


def test_common_random_numbers_make_rates_comparable():
    a = simulate(100, const(0.001), NO_BATCHING, requests=1000, seed=3)
    b = simulate(100, const(0.001), NO_BATCHING, requests=1000, seed=3)
    assert a == b
    with pytest.raises(ValueError):
        simulate(0, const(0.001), NO_BATCHING)
