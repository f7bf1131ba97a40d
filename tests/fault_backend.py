"""Fault-injecting TEST backends (tests only; never in the product path), registered like any other backend:

    monkeypatch.setitem(select.REGISTRY, "fault", ("fault_backend:FaultBackend", ""))      # pure numpy, doubles x
    monkeypatch.setitem(select.REGISTRY, "fault-ort", ("fault_backend:FaultOrtBackend", ""))  # real ONNX Runtime

A batch whose first input holds one of the marker values in column 0 misbehaves:

    FATAL  the engine reports a sticky CUDA error (EngineFatal; for FaultOrtBackend the raw ONNX Runtime text,
           mapped by the product's OnnxRuntimeBackend like a real one)
    DIE    the worker thread is killed: a BaseException escapes the engine (as SystemExit would)
    ERROR  an ordinary engine error (RuntimeError)

``FAULTS`` (shared by every instance, reset by ``FAULTS.reset()``) makes the next activations fail
(``fail_starts``), hold them until an event is set (``hold_starts``), holds batches (``gate``), and records
what happened (``activations``, ``deactivations``, ``start_times``).
"""

from __future__ import annotations

import threading
import time

import numpy as np

from xinfer_sdk.errors import EngineFatal
from xinfer_sdk.runtime.backends.base import Backend
from xinfer_sdk.runtime.backends.onnxruntime import OnnxRuntimeBackend

FATAL, DIE, ERROR = 1001.0, 1002.0, 1003.0
CUDA_TEXT = ("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 700: an illegal memory access was encountered ; GPU=0 ; "
             "hostname=test ; file=cuda_call.cc ; line=123 ; expr=cudaStreamSynchronize(stream);")


class WorkerKilled(BaseException):
    """What escapes the engine when a test kills a worker (not an Exception: nothing catches it on the way)."""


class Faults:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.fail_starts = 0  # the next N activations raise
        self.hold_starts: threading.Event | None = None  # activations wait for it (after the first `free_starts`)
        self.free_starts = 0
        self.gate: threading.Event | None = None  # batches wait for it
        self.activations = 0
        self.failed_activations = 0
        self.deactivations = 0
        self.start_times: list[float] = []

    def on_activate(self) -> None:
        with self.lock:
            self.start_times.append(time.perf_counter())
            n = len(self.start_times)
            hold = self.hold_starts if n > self.free_starts else None
        if hold is not None:
            hold.wait(30)
        with self.lock:
            if self.fail_starts > 0:
                self.fail_starts -= 1
                self.failed_activations += 1
                raise RuntimeError(f"injected: the device did not come back (activation {n})")
            self.activations += 1

    def on_batch(self, x: np.ndarray) -> None:
        if self.gate is not None:
            self.gate.wait(30)
        if x.ndim < 2 or not x.shape[0]:
            return
        col = x[:, 0]
        if (col == FATAL).any():
            raise RuntimeError(CUDA_TEXT)
        if (col == DIE).any():
            raise WorkerKilled("injected: worker thread killed")
        if (col == ERROR).any():
            raise RuntimeError("engine exploded")


FAULTS = Faults()


class FaultBackend(Backend):
    """Doubles ``x`` (output ``y``); markers in ``x[:, 0]`` inject faults. Made with ``cls(None, profile=None)``."""

    name = "fault"

    def activate_impl(self) -> None:
        FAULTS.on_activate()

    def infer_impl(self, feeds):
        x = feeds["x"]
        try:
            FAULTS.on_batch(x)
        except RuntimeError as exc:  # what a real backend does with an engine's error text
            fatal = EngineFatal.recognise(exc, self.name)
            if fatal is not None:
                raise fatal from exc
            raise
        return {"y": x * 2}

    def deactivate_impl(self) -> None:
        with FAULTS.lock:
            FAULTS.deactivations += 1


class FaultOrtBackend(OnnxRuntimeBackend):
    """The real ONNX Runtime backend, with the fault raised from inside the session's run (as ORT would)."""

    name = "fault-ort"

    def activate_impl(self) -> None:
        FAULTS.on_activate()
        super().activate_impl()
        run = self._run

        def faulty_run(names, feeds):
            FAULTS.on_batch(np.asarray(next(iter(feeds.values()))))
            return run(names, feeds)

        self._run = faulty_run

    def deactivate_impl(self) -> None:
        super().deactivate_impl()
        with FAULTS.lock:
            FAULTS.deactivations += 1
