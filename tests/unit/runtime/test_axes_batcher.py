"""Per-tensor batch axes in the batching core: a state batched on axis 1, a scalar input shared by a batch."""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np
import pytest

from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.errors import InvalidInput
from xinfer_sdk.policy import BatchPolicy
from xinfer_sdk.runtime.backends.base import Backend
from xinfer_sdk.runtime.batcher import FUTURE, Batcher
from xinfer_sdk.runtime.validate import InputValidator

INPUTS = [TensorSpec("x", "float32", (-1, 3)), TensorSpec("state", "float32", (2, -1, 4), batch_axis=1),
          TensorSpec("sr", "int64", (), batch_axis=None)]
OUTPUTS = [TensorSpec("y", "float32", (-1, 3)), TensorSpec("stateN", "float32", (2, -1, 4), batch_axis=1)]


class StateModel(Backend):
    """Test double of a streaming model: y = x * sr, stateN = state + x's row sum (per sample)."""

    name = "state-double"

    def __init__(self, log, gate):
        super().__init__(None, profile=None)
        self.log, self.gate = log, gate

    def activate_impl(self):
        pass

    def infer_impl(self, feeds):
        self.log.append((feeds["x"].shape, feeds["state"].shape, int(feeds["sr"])))
        self.gate.wait()
        x, state = feeds["x"], feeds["state"]
        return {"y": x * feeds["sr"], "stateN": state + x.sum(axis=1)[None, :, None]}


@pytest.fixture
def model():
    log, gate = [], threading.Event()
    b = Batcher(lambda i: StateModel(log, gate), policy=BatchPolicy(max_batch_size=8, max_batch_delay=0.05),
                input_names=["x", "state", "sr"], inputs=INPUTS, outputs=OUTPUTS)
    v = InputValidator(INPUTS, batched=True)
    yield b, v, log, gate
    b.close(drain=False, timeout=5)


def request(n, seed, sr=16000):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 3), dtype=np.float32),
            "state": rng.standard_normal((2, n, 4), dtype=np.float32), "sr": np.array(sr, dtype=np.int64)}


def send(b, v, inputs):
    f = concurrent.futures.Future()
    b.enqueue(*v(inputs), FUTURE, f)
    return f


def expected(inputs):
    x, state = inputs["x"], inputs["state"]
    return x * inputs["sr"], state + x.sum(axis=1)[None, :, None]


def test_states_stack_on_axis_1_and_each_caller_gets_its_own_back(model):
    b, v, log, gate = model
    reqs = [request(n, seed) for seed, n in enumerate((1, 2, 1))]
    futs = [send(b, v, r) for r in reqs]
    gate.set()
    for r, f in zip(reqs, futs):
        out = f.result(timeout=5)
        y, state = expected(r)
        assert out["stateN"].shape == r["state"].shape
        np.testing.assert_allclose(out["stateN"], state, rtol=1e-6)
        np.testing.assert_allclose(out["y"], y, rtol=1e-6)
    assert log == [((4, 3), (2, 4, 4), 16000)]


def test_unbatched_inputs_with_different_values_go_in_separate_batches(model):
    b, v, log, gate = model
    futs = [send(b, v, request(1, i, sr=8000 if i % 2 else 16000)) for i in range(4)]
    gate.set()
    for f in futs:
        f.result(timeout=5)
    assert sorted(log, key=lambda e: e[2]) == [((2, 3), (2, 2, 4), 8000), ((2, 3), (2, 2, 4), 16000)]


def test_a_request_above_max_batch_size_is_split_and_reassembled_along_each_axis(model):
    b, v, log, gate = model
    r = request(11, 7)
    f = send(b, v, r)
    gate.set()
    out = f.result(timeout=5)
    y, state = expected(r)
    np.testing.assert_allclose(out["stateN"], state, rtol=1e-6)
    np.testing.assert_allclose(out["y"], y, rtol=1e-6)
    assert [e[0][0] for e in log] == [8, 3]


def test_the_batch_size_is_read_on_each_inputs_own_axis():
    v = InputValidator(INPUTS, batched=True)
    _, n, _ = v(request(3, 0))
    assert n == 3
    bad = request(3, 0)
    bad["state"] = bad["state"][:, :2]
    with pytest.raises(InvalidInput, match=r"input 'state': batch size 2 differs from the other inputs' 3 "
                                           r"\(the batch axis is x on dimension 0, state on dimension 1\)"):
        v(bad)


def test_the_signature_holds_the_value_of_an_unbatched_input():
    v = InputValidator(INPUTS, batched=True)
    assert v(request(1, 0, sr=8000))[2] != v(request(1, 0, sr=16000))[2]
    assert v(request(1, 0))[2] == v(request(2, 1))[2]


def test_a_scalar_input_declared_without_batch_axis_none_is_still_shared_by_the_batch():
    specs = [TensorSpec("x", "float32", (-1, 3)), TensorSpec("sr", "int64", ())]  # batch_axis left at its default
    v = InputValidator(specs, batched=True)
    _, n, sig = v({"x": np.zeros((2, 3), np.float32), "sr": np.array(8000, np.int64)})
    assert n == 2 and sig != v({"x": np.zeros((2, 3), np.float32), "sr": np.array(16000, np.int64)})[2]


def test_a_model_without_a_batch_axis_runs_each_request_alone_like_max_batch_size_0():
    log, gate = [], threading.Event()
    specs = [TensorSpec("x", "float32", (2, 3))]
    b = Batcher(lambda i: Doubling(log, gate), policy=BatchPolicy(max_batch_size=8, max_batch_delay=0.05),
                input_names=["x"], batched=False, inputs=specs, outputs=[TensorSpec("y", "float32", (2, 3))])
    v = InputValidator(specs, batched=False)
    try:
        futs = [send(b, v, {"x": np.full((2, 3), i, np.float32)}) for i in range(3)]
        gate.set()
        outs = [f.result(timeout=5) for f in futs]
    finally:
        b.close(drain=False, timeout=5)
    assert log == [(2, 3)] * 3 and [float(o["y"][0, 0]) for o in outs] == [0.0, 2.0, 4.0]
    with pytest.raises(InvalidInput, match="dimension 0 must be 2"):
        v({"x": np.zeros((4, 3), np.float32)})


class Doubling(Backend):
    name = "doubling"

    def __init__(self, log, gate):
        super().__init__(None, profile=None)
        self.log, self.gate = log, gate

    def activate_impl(self):
        pass

    def infer_impl(self, feeds):
        self.log.append(feeds["x"].shape)
        self.gate.wait()
        return {"y": feeds["x"] * 2}
