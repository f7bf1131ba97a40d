"""Stateful sequences on a real ONNX Runtime model: a running sum whose state [2, batch, 3] batches on axis 1 (as
silero-vad's), with a scalar 'scale' input shared by a batch (as silero's sample rate)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import xinfer_sdk as xs  # noqa: E402
from xinfer_sdk.errors import InvalidInput, QueueFull, UserError  # noqa: E402

D = 3


def make_running_sum(path, state_in="state", state_out="stateN"):
    """y = (x + state[0]) * scale; stateN = state + x (the sum of every chunk so far, twice)."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Gather", [state_in, "zero"], ["s0"], axis=0),
             helper.make_node("Add", ["x", "s0"], ["xs"]),
             helper.make_node("Cast", ["scale"], ["scale_f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["xs", "scale_f"], ["y"]),
             helper.make_node("Add", [state_in, "x"], [state_out])]
    graph = helper.make_graph(
        nodes, "running_sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", D]),
         helper.make_tensor_value_info(state_in, TensorProto.FLOAT, [2, "N", D]),
         helper.make_tensor_value_info("scale", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", D]),
         helper.make_tensor_value_info(state_out, TensorProto.FLOAT, [2, "N", D])],
        initializer=[helper.make_tensor("zero", TensorProto.INT64, [], [0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def reference(chunks, scale):
    """What the stream must answer, chunk by chunk."""
    total = np.zeros(D, np.float32)
    out = []
    for c in chunks:
        out.append((c + total) * scale)
        total = total + c
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = make_running_sum(tmp_path_factory.mktemp("seq") / "running_sum.onnx")
    m = xs.load(path, profile="cpu", threads=1, batching={"max_batch_size": 16, "max_batch_delay": "5ms"},
                sequence={"idle_timeout_s": 30, "max_sequences": 64})
    yield m
    m.close()


def chunks_for(seed, n=6):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, D)).astype(np.float32) for _ in range(n)]


def feed(c, scale=1):
    return {"x": c, "scale": np.array(scale, np.int64)}


def test_state_pair_is_detected_with_its_batch_axis(model):
    d = model.describe()["sequence"]
    assert d["state"] == {"state": "stateN"} and d["state_axes"] == {"state": 1} and d["batched"]


def test_one_stream_keeps_its_state_between_chunks(model):
    cs = chunks_for(0)
    with model.stream() as s:
        got = [s(feed(c))["y"] for c in cs]
    for g, r in zip(got, reference(cs, 1)):
        np.testing.assert_allclose(g, r, rtol=1e-6)


def test_answers_hold_only_the_non_state_outputs(model):
    with model.stream() as s:
        out = s(feed(chunks_for(1)[0]))
    assert sorted(out) == ["y"]


def test_concurrent_streams_batch_together_and_each_matches_its_own_run(model):
    n = 16
    data = [chunks_for(10 + k, 8) for k in range(n)]
    got = [None] * n
    before = model.stats()["batch_size"]["count"]
    barrier = threading.Barrier(n)

    def run(k):
        barrier.wait()
        with model.stream() as s:
            got[k] = [s(feed(c, scale=1 + k % 3))["y"] for c in data[k]]

    ts = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    for k in range(n):
        for g, r in zip(got[k], reference(data[k], 1 + k % 3)):
            np.testing.assert_allclose(g, r, rtol=1e-6)
    batches = model.stats()["batch_size"]["count"] - before
    assert batches < n * 8, "no two streams ever shared a batch"


def _submit(model, sid, x, **flags):
    async def go():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        model.sequences.submit(feed(x), {"sequence_id": sid, **flags}, fut, loop, None)
        return await fut

    return asyncio.run(go())


def test_unknown_sequence_without_start_is_refused_naming_it(model):
    with pytest.raises(InvalidInput, match=r"sequence 4242 is not live.*sequence_start"):
        _submit(model, 4242, chunks_for(2)[0])


def test_missing_sequence_id_says_what_to_send(model):
    with pytest.raises(InvalidInput, match="sequence_id"):
        _submit(model, None, chunks_for(2)[0])


def test_end_frees_the_state(model):
    x = chunks_for(3)[0]
    _submit(model, "end-me", x, sequence_start=True)
    _submit(model, "end-me", x, sequence_end=True)
    with pytest.raises(InvalidInput, match="'end-me' is not live"):
        _submit(model, "end-me", x)


def test_start_on_a_live_sequence_restarts_from_zero_state(model):
    x = chunks_for(4)[0]
    _submit(model, 77, x, sequence_start=True)
    again = _submit(model, 77, x, sequence_start=True, sequence_end=True)
    np.testing.assert_allclose(again["y"], x, rtol=1e-6)


def test_pipelined_requests_of_one_sequence_run_in_order(model):
    cs = chunks_for(5, 10)

    async def go():
        loop = asyncio.get_running_loop()
        futs = []
        for i, c in enumerate(cs):
            fut = loop.create_future()
            model.sequences.submit(feed(c), {"sequence_id": "pipe", "sequence_start": i == 0,
                                             "sequence_end": i == len(cs) - 1}, fut, loop, None)
            futs.append(fut)
        return await asyncio.gather(*futs)

    got = asyncio.run(go())
    for g, r in zip(got, reference(cs, 1)):
        np.testing.assert_allclose(g["y"], r, rtol=1e-6)


def test_sending_the_state_input_is_refused(model):
    with pytest.raises(InvalidInput, match="'state' is the sequence state"), model.stream() as s:
        s({**feed(chunks_for(6)[0]), "state": np.zeros((2, 1, D), np.float32)})


def test_stateless_calls_on_a_stateful_model_point_to_stream(model):
    with pytest.raises(UserError, match=r"stateful.*model\.stream\(\)"):
        model.infer(feed(chunks_for(7)[0]))


def test_idle_timeout_and_max_sequences(tmp_path):
    path = make_running_sum(tmp_path / "rs.onnx")
    with xs.load(path, profile="cpu", threads=1, sequence={"idle_timeout_s": 0.2, "max_sequences": 2}) as m:
        x = chunks_for(8)[0]
        _submit(m, 1, x, sequence_start=True)
        _submit(m, 2, x, sequence_start=True)
        with pytest.raises(QueueFull, match="max_sequences 2"):
            _submit(m, 3, x, sequence_start=True)
        time.sleep(0.3)
        _submit(m, 3, x, sequence_start=True)  # the idle ones were freed to make room
        with pytest.raises(InvalidInput, match="sequence 1 is not live"):
            _submit(m, 1, x)


def test_state_declared_in_config_yaml(tmp_path):
    path = make_running_sum(tmp_path / "mem.onnx", state_in="mem", state_out="mem_next")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("max_batch_size: 4\nsequence:\n  state: {mem: mem_next}\n  max_sequences: 8\n")
    with xs.load(path, profile="cpu", threads=1, config=cfg) as m:
        assert m.describe()["sequence"]["source"] == "config.yaml"
        cs = chunks_for(9)
        with m.stream() as s:
            got = [s(feed(c))["y"] for c in cs]
        np.testing.assert_allclose(got[-1], reference(cs, 1)[-1], rtol=1e-6)


def test_undetectable_names_leave_the_model_stateless(tmp_path):
    path = make_running_sum(tmp_path / "mem.onnx", state_in="mem", state_out="mem_next")
    with xs.load(path, profile="cpu", threads=1) as m:
        assert m.sequences is None


def _cf_enqueue(m, sid, x, **flags):
    import concurrent.futures

    f = concurrent.futures.Future()

    def resolve(v, e):
        f.set_exception(e) if e is not None else f.set_result(v)

    handle = m.sequences.enqueue(sid, feed(x), start=flags.get("start", False), end=flags.get("end", False),
                                 timeout=None, resolve=resolve)
    return f, handle


@pytest.fixture
def slow_batching(tmp_path):
    """A model whose first request waits 300 ms in the queue for a batch: time to act on the ones behind it."""
    path = make_running_sum(tmp_path / "rs.onnx")
    with xs.load(path, profile="cpu", threads=1, batching={"max_batch_size": 16, "max_batch_delay": "300ms"}) as m:
        yield m


def test_a_withdrawn_request_waiting_behind_its_sequence_is_skipped(slow_batching):
    m = slow_batching
    a, b, c = chunks_for(11, 3)
    f1, _ = _cf_enqueue(m, "w", a, start=True)
    f2, h2 = _cf_enqueue(m, "w", b)
    f3, _ = _cf_enqueue(m, "w", c)
    assert m.batcher.cancel(h2)
    np.testing.assert_allclose(f1.result(10)["y"], a, rtol=1e-6)
    with pytest.raises(xs.errors.ServerClosing, match="withdrawn"):
        f2.result(10)
    np.testing.assert_allclose(f3.result(10)["y"], a + c, rtol=1e-6)  # the state skipped b


def test_close_runs_the_requests_waiting_behind_their_sequence(tmp_path):
    path = make_running_sum(tmp_path / "rs.onnx")
    m = xs.load(path, profile="cpu", threads=1, batching={"max_batch_size": 16, "max_batch_delay": "300ms"})
    cs = chunks_for(12, 5)
    futs = [_cf_enqueue(m, "d", c, start=i == 0)[0] for i, c in enumerate(cs)]
    assert m.close(drain=True, timeout=30)
    for f, r in zip(futs, reference(cs, 1)):
        np.testing.assert_allclose(f.result(0)["y"], r, rtol=1e-6)


def test_idle_state_is_freed_without_further_requests(tmp_path):
    path = make_running_sum(tmp_path / "rs.onnx")
    with xs.load(path, profile="cpu", threads=1, sequence={"idle_timeout_s": 0.2}) as m:
        _submit(m, "quiet", chunks_for(13)[0], sequence_start=True)
        assert m.sequences.stats()["live"] == 1
        deadline = time.monotonic() + 5
        while m.sequences.stats()["live"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert m.sequences.stats()["live"] == 0 and m.sequences.stats()["expired"] == 1
