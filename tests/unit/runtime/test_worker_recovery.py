"""Workers that fail and recover: a lost worker (dead thread, fatal engine error) is replaced with backoff and
counted, only its batch fails, readiness follows the healthy workers, and no request waits forever."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import numpy as np
import pytest
from fault_backend import DIE, ERROR, FATAL, FAULTS, WorkerKilled

from xinfer_sdk.accel.nvidia._cudart import CudaError
from xinfer_sdk.errors import (
    DeadlineExceeded,
    EngineFatal,
    InferenceError,
    ServerClosing,
    WorkersUnavailable,
)
from xinfer_sdk.policy import BatchPolicy
from xinfer_sdk.runtime import supervisor
from xinfer_sdk.runtime.backends import select
from xinfer_sdk.runtime.batcher import FUTURE, Batcher

BOUND = 5.0  # every future in these tests resolves well within this (the bug was: never)


@pytest.fixture
def make(monkeypatch):
    """A Batcher whose workers run the registered 'fault' test backend; fast backoff."""
    monkeypatch.setitem(select.REGISTRY, "fault", ("fault_backend:FaultBackend", ""))
    monkeypatch.setattr(supervisor, "RESTART_BACKOFF_S", 0.01)
    monkeypatch.setattr(supervisor, "RESTART_BACKOFF_MAX_S", 0.04)
    monkeypatch.setattr(supervisor, "MAX_FAILED_RESTARTS", 3)
    monkeypatch.setattr(supervisor, "CLOSE_WAIT_S", 0.5)
    FAULTS.reset()
    cls = select.backend_class("fault")
    made = []

    def make(**policy):
        policy = {"max_batch_size": 1, "max_batch_delay": 0, **policy}
        b = Batcher(lambda i: cls(None, profile=None), policy=BatchPolicy(**policy), input_names=["x"], name="m")
        made.append(b)
        return b

    yield make
    if FAULTS.hold_starts is not None:
        FAULTS.hold_starts.set()
    if FAULTS.gate is not None:
        FAULTS.gate.set()
    for b in made:
        b.close(drain=False, timeout=5)
    FAULTS.reset()


def submit(b, value, timeout=None):
    x = np.full((1, 2), value, dtype=np.float32)
    f = concurrent.futures.Future()
    b.enqueue({"x": x}, 1, ((2,),), FUTURE, f, timeout=timeout)
    return f


def until(cond, what):
    end = time.perf_counter() + BOUND
    while not cond():
        if time.perf_counter() > end:
            raise AssertionError(f"not within {BOUND}s: {what}")
        time.sleep(0.005)


def test_worker_killed_mid_run_is_replaced_and_later_requests_succeed(make):
    b = make()
    with pytest.raises(InferenceError, match=r"worker 0 died while running this batch \(WorkerKilled: injected"):
        submit(b, DIE).result(BOUND)
    assert submit(b, 3.0).result(BOUND)["y"][0, 0] == 6.0
    assert b.stats.worker_restarts == 1 and b.healthy == 1
    assert FAULTS.activations == 2 and FAULTS.deactivations == 1  # the dead worker's engine was released


def test_a_bug_outside_the_engine_call_kills_the_worker_its_batch_fails_and_it_is_replaced(make):
    b = make()
    record_batch = b.stats.record_batch

    def broken_once(*args):
        b.stats.record_batch = record_batch
        raise WorkerKilled("injected: bug after the engine ran")

    b.stats.record_batch = broken_once  # raises in _run after the engine's try, before delivery
    with pytest.raises(InferenceError, match=r"worker 0 died while running this batch \(WorkerKilled: injected: bug"):
        submit(b, 1.0).result(BOUND)
    assert submit(b, 2.0).result(BOUND)["y"][0, 0] == 4.0
    assert b.stats.worker_restarts == 1
    assert b.stats.snapshot()["in_flight"] == 0  # the failed request was settled exactly once


def test_fatal_engine_error_fails_only_its_batch_and_queued_requests_wait_for_the_replacement(make):
    b = make()
    FAULTS.gate = threading.Event()
    fatal = submit(b, FATAL)  # taken by the worker, held in the engine
    until(lambda: b.stats.queue_depth == 0, "the worker took the fatal batch")
    queued = [submit(b, float(i)) for i in range(4)]
    FAULTS.gate.set()
    with pytest.raises(EngineFatal, match="illegal memory access"):
        fatal.result(BOUND)
    assert [f.result(BOUND)["y"][0, 0] for f in queued] == [0.0, 2.0, 4.0, 6.0]
    assert b.stats.worker_restarts == 1
    assert b.stats.snapshot()["requests"]["failed"] == {"EngineFatal": 1}


def test_an_ordinary_engine_error_fails_its_batch_without_replacing_the_worker(make):
    b = make()
    with pytest.raises(InferenceError, match="engine exploded"):
        submit(b, ERROR).result(BOUND)
    assert submit(b, 1.0).result(BOUND)["y"][0, 0] == 2.0
    assert b.stats.worker_restarts == 0 and FAULTS.activations == 1


def test_only_the_lost_worker_is_replaced_the_others_keep_serving(make):
    b = make(device_concurrency=2)
    with pytest.raises(EngineFatal):
        submit(b, FATAL).result(BOUND)
    assert b.healthy >= 1  # the other worker never stopped
    assert [submit(b, 1.0).result(BOUND)["y"][0, 0] for _ in range(4)] == [2.0] * 4
    until(lambda: b.healthy == 2, "the lost worker came back")
    assert b.stats.worker_restarts == 1 and FAULTS.activations == 3


class RecordingEvent(threading.Event):
    def __init__(self):
        super().__init__()
        self.waits = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return super().wait(timeout)


def test_replacement_backs_off_exponentially_and_counts_restarts_and_failures(make):
    b = make()
    b._sup.stop = RecordingEvent()
    FAULTS.fail_starts = 2  # one fewer than MAX_FAILED_RESTARTS: queued requests keep waiting
    with pytest.raises(EngineFatal):
        submit(b, FATAL).result(BOUND)
    assert submit(b, 1.0).result(BOUND)["y"][0, 0] == 2.0  # queued until the 3rd attempt came up
    assert b._sup.stop.waits == [0.01, 0.02, 0.04]  # doubling from RESTART_BACKOFF_S
    w = b.stats.snapshot()["workers"]
    assert (w["restarts"], w["restart_failures"], w["healthy"], w["total"]) == (1, 2, 1, 1)
    assert "illegal memory access" in w["last_error"]


def test_no_healthy_worker_while_replacing_then_healthy_again(make):
    b = make()
    FAULTS.hold_starts = threading.Event()
    FAULTS.free_starts = 1  # the first start is free; the replacement is held
    with pytest.raises(InferenceError):
        submit(b, DIE).result(BOUND)
    until(lambda: b.healthy == 0, "the lost worker counted as not healthy")
    assert b.stats.snapshot()["workers"]["healthy"] == 0
    FAULTS.hold_starts.set()
    until(lambda: b.healthy == 1, "the replacement counted as healthy")
    assert b.stats.snapshot()["workers"]["healthy"] == 1


def test_queued_request_expires_on_its_deadline_while_no_worker_is_healthy(make):
    b = make()
    FAULTS.hold_starts = threading.Event()
    FAULTS.free_starts = 1
    with pytest.raises(InferenceError):
        submit(b, DIE).result(BOUND)
    until(lambda: b.healthy == 0, "no worker healthy")
    late = submit(b, 1.0, timeout=0.1)
    waiting = submit(b, 2.0)  # no deadline: waits for the replacement
    with pytest.raises(DeadlineExceeded, match="deadline passed while it was queued"):
        late.result(BOUND)
    assert not waiting.done()
    FAULTS.hold_starts.set()
    assert waiting.result(BOUND)["y"][0, 0] == 4.0


def test_requests_never_hang_when_replacements_keep_failing(make):
    b = make(max_queue_size=0)
    b._sup.stop = RecordingEvent()
    FAULTS.fail_starts = 10**6
    with pytest.raises(EngineFatal):
        submit(b, FATAL).result(BOUND)
    queued = [submit(b, float(i)) for i in range(5)]
    for f in queued:  # failed after MAX_FAILED_RESTARTS attempts, naming the cause
        with pytest.raises(WorkersUnavailable, match=r"replacing it failed 3 times in a row \(last error: "
                                                     r"RuntimeError: injected: the device did not come back"):
            f.result(BOUND)
    with pytest.raises(WorkersUnavailable) as refused:  # refused at once while down
        submit(b, 1.0)
    assert refused.value.http_status == 503
    assert b.stats.snapshot()["requests"]["rejected"] == {"workers_unavailable": 1}
    until(lambda: len(b._sup.stop.waits) >= 5, "two more attempts")
    assert b._sup.stop.waits[:5] == [0.01, 0.02, 0.04, 0.04, 0.04]  # it keeps trying, capped at the maximum


def test_a_model_that_was_down_takes_requests_again_when_a_worker_is_back(make):
    b = make()
    FAULTS.fail_starts = 4  # MAX_FAILED_RESTARTS (3) fail -> down; the 5th attempt succeeds
    with pytest.raises(EngineFatal):
        submit(b, FATAL).result(BOUND)
    until(lambda: b._down is not None, "the model went down")
    until(lambda: b.healthy == 1, "a replacement came up")
    assert submit(b, 1.0).result(BOUND)["y"][0, 0] == 2.0


def test_close_during_restarts_answers_queued_requests_and_returns(make):
    b = make()
    FAULTS.fail_starts = 10**6
    with pytest.raises(EngineFatal):
        submit(b, FATAL).result(BOUND)
    queued = submit(b, 1.0)
    t0 = time.perf_counter()
    assert b.close(timeout=None) is True
    assert time.perf_counter() - t0 < BOUND
    with pytest.raises(ServerClosing, match="closed while none of its workers was running"):
        queued.result(BOUND)
    with pytest.raises(ServerClosing):
        submit(b, 1.0)


def test_close_while_a_replacement_is_being_built_does_not_hang(make):
    b = make()
    FAULTS.hold_starts = threading.Event()
    FAULTS.free_starts = 1
    with pytest.raises(InferenceError):
        submit(b, DIE).result(BOUND)
    until(lambda: len(FAULTS.start_times) == 2, "the replacement started building")
    t0 = time.perf_counter()
    assert b.close(timeout=None) is False  # the build is still running after CLOSE_WAIT_S
    assert time.perf_counter() - t0 < BOUND
    FAULTS.hold_starts.set()
    until(lambda: FAULTS.deactivations == 2, "the late replacement was released, not installed")
    assert b.healthy == 0


def test_engine_fatal_recognises_sticky_cuda_errors_only():
    ort = RuntimeError("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 710: device-side assert triggered ; GPU=0")
    trt = CudaError("CUDA cudaStreamSynchronize failed: cudaErrorIllegalAddress")
    oom = RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : CUDA failure 2: out of memory ; GPU=0")
    assert "device-side assert" in str(EngineFatal.recognise(ort, "onnxruntime"))
    assert "cudaErrorIllegalAddress" in str(EngineFatal.recognise(trt, "tensorrt"))
    assert EngineFatal.recognise(oom, "onnxruntime") is None
    assert EngineFatal.recognise(ValueError("shape mismatch"), "tensorrt") is None


def test_tensorrt_backend_raises_engine_fatal_for_a_sticky_cuda_error_only(monkeypatch):
    from xinfer_sdk.runtime.backends.tensorrt import TensorRTBackend

    backend = TensorRTBackend.__new__(TensorRTBackend)  # no GPU here: only the error mapping around the run
    monkeypatch.setattr(backend, "_infer", lambda feeds: (_ for _ in ()).throw(
        CudaError("CUDA cudaStreamSynchronize failed: cudaErrorIllegalAddress")), raising=False)
    with pytest.raises(EngineFatal, match="tensorrt: the device or engine is in an unrecoverable state"):
        backend.infer_impl({})
    monkeypatch.setattr(backend, "_infer", lambda feeds: (_ for _ in ()).throw(
        CudaError("CUDA cudaMalloc failed: cudaErrorMemoryAllocation")), raising=False)
    with pytest.raises(CudaError, match="cudaErrorMemoryAllocation"):
        backend.infer_impl({})
