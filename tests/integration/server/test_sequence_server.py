"""Stateful streams through the server: 32 concurrent silero-vad streams over tritonclient (HTTP and gRPC, with
sequence_id / sequence_start / sequence_end) give, chunk for chunk, the speech probabilities of the silero
package's own OnnxWrapper run on each stream alone (issue 16 item 3)."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

th = pytest.importorskip("tritonclient.http")
tg = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("onnxruntime")

from corpus import SILERO, SILERO_VAD, extract_package  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

STREAMS, CHUNKS, N, CTX, SR = 32, 24, 512, 64, 16000


def audio(k: int) -> np.ndarray:
    """A stream that has speech-like bursts (a voiced harmonic tone, noise between) at a per-stream offset."""
    rng = np.random.default_rng(k)
    t = np.arange(N * CHUNKS) / SR
    voiced = sum(np.sin(2 * np.pi * f * (1 + 0.05 * np.sin(2 * np.pi * 3 * t)) * t) / i
                 for i, f in enumerate((140 + 5 * k, 280 + 10 * k, 420 + 15 * k), 1))
    gate = (np.sin(2 * np.pi * (0.8 + 0.05 * k) * t + k) > 0).astype(np.float32)
    return (0.3 * gate * voiced + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def silero():
    onnx_path = SILERO_VAD.fetch()  # skips with the reason when the wheel cannot be fetched
    torch = pytest.importorskip("torch", reason="the silero package's OnnxWrapper needs torch (the CPU wheel)")
    sys.path.insert(0, str(extract_package(*SILERO)))
    try:
        from silero_vad.utils_vad import OnnxWrapper
    finally:
        sys.path.pop(0)
    refs = []
    for k in range(STREAMS):
        w = OnnxWrapper(str(onnx_path), force_onnx_cpu=True)
        a = torch.from_numpy(audio(k))
        refs.append(np.array([float(w(a[i * N:(i + 1) * N], SR)) for i in range(CHUNKS)]))
    return onnx_path, refs


@pytest.fixture(scope="module")
def server(silero):
    import xinfer_sdk as xs
    from xinfer_sdk.server.runner import Server

    model = xs.load(silero[0], profile="cpu", name="vad", threads=1,
                    batching={"max_batch_size": 32, "max_batch_delay": "2ms"})
    srv = Server([model], host="127.0.0.1", port=0, grpc_port=0, gpu_metrics=False, drain_timeout=5)
    srv.start_background()
    srv.vad = model
    yield srv
    srv.stop()


def stream_once(client, mod, k: int, sid) -> np.ndarray:
    """What the silero OnnxWrapper does host-side: the last 64 samples of the previous chunk go in front."""
    a = audio(k)
    ctx = np.zeros(CTX, np.float32)
    probs = []
    for i in range(CHUNKS):
        x = np.concatenate([ctx, a[i * N:(i + 1) * N]])[None]
        ctx = x[0, -CTX:]
        inp = [mod.InferInput("input", list(x.shape), "FP32"), mod.InferInput("sr", [], "INT64")]
        inp[0].set_data_from_numpy(x)
        inp[1].set_data_from_numpy(np.array(SR, np.int64))
        res = client.infer("vad", inp, sequence_id=sid, sequence_start=i == 0, sequence_end=i == CHUNKS - 1)
        probs.append(float(res.as_numpy("output")[0, 0]))
    return np.array(probs)


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_32_concurrent_streams_match_the_silero_package(server, silero, proto):
    _, refs = silero
    mod = th if proto == "http" else tg
    url = f"127.0.0.1:{server.port if proto == 'http' else server.grpc_port}"
    got: list = [None] * STREAMS
    errors: list = []
    barrier = threading.Barrier(STREAMS)

    def run(k):
        client = mod.InferenceServerClient(url)
        try:
            barrier.wait()
            got[k] = stream_once(client, mod, k, 1000 + k if proto == "http" else f"grpc-{k}")
        except Exception as exc:  # reported below, with the stream
            errors.append((k, exc))
        finally:
            client.close()

    before = server.vad.stats()["batch_size"]["count"]
    ts = [threading.Thread(target=run, args=(k,)) for k in range(STREAMS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors[:3]
    worst = max(float(np.abs(g - r).max()) for g, r in zip(got, refs))
    assert worst <= 1e-5, f"largest difference from the silero package: {worst:g}"
    assert max(float(r.max()) for r in refs) > 0.5, "the test audio never looks like speech"
    batches = server.vad.stats()["batch_size"]["count"] - before
    assert batches < STREAMS * CHUNKS // 2, f"{STREAMS * CHUNKS} chunks ran in {batches} batches: streams did not batch"


def test_a_chunk_of_an_unknown_sequence_is_a_400_naming_it(server):
    client = th.InferenceServerClient(f"127.0.0.1:{server.port}")
    x = np.zeros((1, N + CTX), np.float32)
    inp = [th.InferInput("input", list(x.shape), "FP32"), th.InferInput("sr", [], "INT64")]
    inp[0].set_data_from_numpy(x)
    inp[1].set_data_from_numpy(np.array(SR, np.int64))
    with pytest.raises(InferenceServerException, match="sequence 987654 is not live"):
        client.infer("vad", inp, sequence_id=987654)
    client.close()
