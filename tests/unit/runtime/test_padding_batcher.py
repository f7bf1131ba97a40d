"""Padded batching: requests of different lengths share a bucket, padded; every caller gets its own cropped answer."""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np
import pytest

from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.errors import UserError
from xinfer_sdk.policy import BatchPolicy
from xinfer_sdk.runtime.backends.base import Backend
from xinfer_sdk.runtime.batcher import FUTURE, Batcher
from xinfer_sdk.runtime.padding import PadCost, PadPlan
from xinfer_sdk.runtime.validate import InputValidator

INPUTS = [TensorSpec("ids", "int64", (-1, -1)), TensorSpec("mask", "int64", (-1, -1))]
OUTPUTS = [TensorSpec("h", "float32", (-1, -1, 2)), TensorSpec("pooled", "float32", (-1,))]
DECL = {"inputs": {"ids": {"axis": 1, "value": 0}, "mask": {"axis": 1, "value": 0}}, "buckets": [16, 32],
        "outputs": {"h": 1}}


class Encoder(Backend):
    """Test double of a masked encoder: per position (ids * mask, position), pooled = masked sum of ids."""

    name = "encoder-double"

    def __init__(self, log, gate):
        super().__init__(None, profile=None)
        self.log, self.gate = log, gate

    def activate_impl(self):
        pass

    def infer_impl(self, feeds):
        self.log.append(feeds["ids"].shape)
        self.gate.wait()
        return unpadded(feeds)


@pytest.fixture
def model():
    log, gate = [], threading.Event()
    b = Batcher(lambda i: Encoder(log, gate), policy=BatchPolicy(max_batch_size=8, max_batch_delay=0.05),
                input_names=["ids", "mask"], inputs=INPUTS, outputs=OUTPUTS, padding=DECL)
    v = InputValidator(INPUTS, batched=True)
    yield b, v, log, gate
    b.close(drain=False, timeout=5)


def request(length, seed):
    ids = np.random.default_rng(seed).integers(1, 1000, (1, length))
    return {"ids": ids, "mask": np.ones_like(ids)}


def send(b, v, inputs):
    f = concurrent.futures.Future()
    b.enqueue(*v(inputs), FUTURE, f)
    return f


def unpadded(inputs):
    ids, mask = inputs["ids"], inputs["mask"]
    pos = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    h = np.stack([ids * mask, pos], axis=-1).astype(np.float32)
    return {"h": h, "pooled": (ids * mask).sum(axis=1).astype(np.float32)}


def test_different_lengths_in_one_bucket_share_a_batch_and_get_their_own_answer(model):
    b, v, log, gate = model
    reqs = [request(n, n) for n in (5, 9, 12)]
    futs = [send(b, v, r) for r in reqs]
    gate.set()
    for r, f in zip(reqs, futs):
        out, want = f.result(timeout=5), unpadded(r)
        assert out["h"].shape == want["h"].shape
        np.testing.assert_array_equal(out["h"], want["h"])
        np.testing.assert_array_equal(out["pooled"], want["pooled"])
    assert log == [(3, 16)]


def test_requests_of_different_buckets_are_not_merged(model):
    b, v, log, gate = model
    futs = [send(b, v, request(n, n)) for n in (5, 20, 9, 30)]
    gate.set()
    for f in futs:
        f.result(timeout=5)
    assert sorted(log) == [(2, 16), (2, 32)]


def test_with_a_large_fixed_cost_shorter_buckets_join_the_heads_batch_and_get_their_own_answer(model):
    b, v, log, gate = model
    b.pad_cost = PadCost(overhead=1e6)
    reqs = [request(n, n) for n in (30, 5, 20, 9)]
    futs = [send(b, v, r) for r in reqs]
    gate.set()
    for r, f in zip(reqs, futs):
        out, want = f.result(timeout=5), unpadded(r)
        assert out["h"].shape == want["h"].shape
        np.testing.assert_array_equal(out["h"], want["h"])
        np.testing.assert_array_equal(out["pooled"], want["pooled"])
    assert log == [(4, 32)]


def test_every_batch_run_teaches_the_cost_model(model):
    b, v, log, gate = model
    futs = [send(b, v, request(n, n)) for n in (5, 9, 12)]
    gate.set()
    for f in futs:
        f.result(timeout=5)
    fit = b.pad_cost.fit()
    assert fit["batches"] == 1 and fit["padded_per_real"] == pytest.approx(3 * 16 / (5 + 9 + 12))


def test_a_request_beyond_the_largest_bucket_merges_only_with_its_own_shape(model):
    b, v, log, gate = model
    futs = [send(b, v, request(n, n)) for n in (40, 41, 40)]
    gate.set()
    outs = [f.result(timeout=5) for f in futs]
    assert sorted(log) == [(1, 41), (2, 40)]
    assert outs[1]["h"].shape == (1, 41, 2)


def test_a_lone_request_runs_unpadded(model):
    b, v, log, gate = model
    gate.set()
    out = send(b, v, request(7, 1)).result(timeout=5)
    assert log == [(1, 7)] and out["h"].shape == (1, 7, 2)


@pytest.mark.parametrize("decl, message", [
    ({**DECL, "inputs": {"input_ids": {"axis": 1}}}, "padding.inputs.input_ids: the model has no input 'input_ids'"),
    ({**DECL, "inputs": {"ids": {"axis": 0}}}, "axis 0 is 'ids''s batch axis"),
    ({**DECL, "buckets": [16, "big"]}, "padding.buckets: expected a list of positive lengths"),
    ({**DECL, "outputs": {"pooled": 1}}, "axis 1 is outside 'pooled''s shape [-1]"),
    ({**DECL, "bucket": [1]}, "padding.bucket: unknown key"),
])
def test_a_bad_declaration_names_the_key_and_what_was_wrong(decl, message):
    with pytest.raises(UserError) as info:
        PadPlan(decl, INPUTS, OUTPUTS)
    assert message in str(info.value)


def test_an_unbatched_input_cannot_be_padded():
    specs = [*INPUTS, TensorSpec("table", "int64", (-1,), batch_axis=None)]
    with pytest.raises(UserError, match="'table' has no batch axis"):
        PadPlan({"inputs": {"table": {"axis": 0}}, "buckets": [16]}, specs, [])


def test_a_fixed_axis_cannot_be_padded():
    specs = [TensorSpec("ids", "int64", (-1, 128))]
    with pytest.raises(UserError, match="axis 1 of 'ids' is fixed at 128"):
        PadPlan({"inputs": {"ids": {"axis": 1}}, "buckets": [16]}, specs, [])
