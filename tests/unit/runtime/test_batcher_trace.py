"""Stage boundaries of the batching core: the recorder gets one record per batch, requests carry their stamps."""

from __future__ import annotations

import concurrent.futures

import numpy as np

from xinfer_sdk.runtime import trace
from xinfer_sdk.runtime.batcher import FUTURE


class Recorder:
    def __init__(self):
        self.batches = []

    def batch(self, model, worker, requests, stamps):
        self.batches.append((model, worker, requests, stamps))

    def request(self, model, key, stamps):
        pass


def test_the_recorder_gets_each_batch_with_ordered_stamps(make_batcher):
    b, _ = make_batcher(max_batch_size=2, max_batch_delay=30.0)
    rec = Recorder()
    previous = trace.set_recorder(rec)
    try:
        futs, reqs = [], []
        for i in range(2):
            f = concurrent.futures.Future()
            reqs.append(b.enqueue({"x": np.full((1, 1), i, np.float32)}, 1, ((1,),), FUTURE, f))
            futs.append(f)
        for f in futs:
            f.result(timeout=5)
    finally:
        trace.set_recorder(previous)
    [(model, worker, requests, stamps)] = rec.batches
    assert model == "model" and worker == 0
    assert requests == [(r.t_enq, 1, id(r)) for r in reqs]
    assert list(stamps) == ["take", "assembled", "computed", "scattered"]
    assert reqs[0].t_enq <= stamps["take"] <= stamps["assembled"] <= stamps["computed"] <= stamps["scattered"]
    assert all(r.t_enq <= r.t_run <= r.t_done == stamps["computed"] for r in reqs)


def test_without_a_recorder_requests_still_carry_their_run_and_done_stamps(make_batcher):
    b, _ = make_batcher(max_batch_size=1)
    f = concurrent.futures.Future()
    r = b.enqueue({"x": np.ones((1, 1), np.float32)}, 1, ((1,),), FUTURE, f)
    f.result(timeout=5)
    assert 0 < r.t_enq <= r.t_run <= r.t_done


def test_a_split_request_carries_the_stamps_of_its_first_and_last_chunk(make_batcher):
    b, log = make_batcher(max_batch_size=2)
    f = concurrent.futures.Future()
    r = b.enqueue({"x": np.ones((5, 1), np.float32)}, 5, ((1,),), FUTURE, f)
    f.result(timeout=5)
    assert len(log) == 3 and 0 < r.t_enq <= r.t_run < r.t_done
