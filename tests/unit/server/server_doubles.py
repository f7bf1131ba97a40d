"""A gated test double of a backend behind a real Model (unit tests of the server only).

The backend doubles its input; while ``gate`` is cleared every batch blocks, so tests can fill the queue,
hold requests in flight, and let them go.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xinfer_sdk.bundle import Bundle, Manifest, TensorSpec
from xinfer_sdk.policy import BatchPolicy
from xinfer_sdk.profiles import load_profile
from xinfer_sdk.runtime.backends.base import Backend
from xinfer_sdk.runtime.model import Model


class GatedDoubler(Backend):
    name = "gated-doubler"

    def activate_impl(self):
        self.gate = self.options.get("gate")
        self.batches = self.options.setdefault("batches", [])

    def infer_impl(self, feeds):
        self.options.setdefault("entered", []).append(feeds["x"].shape[0])  # a batch reached the engine
        if self.gate is not None:
            self.gate.wait(30)
        x = feeds["x"]
        self.batches.append(x.shape[0])
        return {"y": x * 2}


def make_model(name="dbl", gate=None, **policy):
    spec_in = TensorSpec("x", "float32", (-1, 4))
    spec_out = TensorSpec("y", "float32", (-1, 4))
    manifest = Manifest(name=name, inputs=[spec_in], outputs=[spec_out], precision="fp32", max_batch_size=8,
                        profile={}, batch={})
    pol = BatchPolicy(**{"max_batch_size": 8, "max_batch_delay": 0.0, **policy})
    opts = {"gate": gate, "batches": [], "entered": []}
    model = Model(Bundle(root=Path("."), manifest=manifest), profile=load_profile("cpu"), backend_cls=GatedDoubler,
                 backend_reason="test double", skipped={}, device="cpu", threads=1, policy=pol, options=opts,
                 warmup=False)
    model.entered = opts["entered"]  # batches that reached the engine (running or done)
    return model


def x(n=1, value=1.0):
    return np.full((n, 4), value, dtype=np.float32)
