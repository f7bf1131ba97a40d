"""A recording test double of a backend (unit tests only): doubles its input, logs every batch it sees."""

from __future__ import annotations

import threading

import pytest

from xinfer_sdk.policy import BatchPolicy
from xinfer_sdk.runtime.backends.base import Backend
from xinfer_sdk.runtime.batcher import Batcher


class Doubler(Backend):
    name = "doubler"

    def __init__(self, log, gate=None, fail_on=None, delay=0.0):
        super().__init__(None, profile=None)
        self.log, self.gate, self.fail_on, self.delay = log, gate, fail_on, delay

    def activate_impl(self):
        pass

    def infer_impl(self, feeds):
        x = feeds["x"]
        self.log.append(x.shape)
        if self.gate is not None:
            self.gate.wait()
        if self.fail_on is not None and x.shape[0] == self.fail_on:
            raise RuntimeError("engine exploded")
        if self.delay:
            threading.Event().wait(self.delay)
        return {"y": x * 2, "s": x.sum(axis=tuple(range(1, x.ndim)))}


@pytest.fixture
def make_batcher():
    made = []

    def make(gate=None, fail_on=None, delay=0.0, **policy):
        log = []
        b = Batcher(lambda i: Doubler(log, gate, fail_on, delay), policy=BatchPolicy(**policy), input_names=["x"])
        made.append(b)
        return b, log

    yield make
    for b in made:
        b.close(drain=False, timeout=5)

