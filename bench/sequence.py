"""Stateful streams: many live silero-vad sequences batched in one core vs one stream at a time (issue 16 item 3).

silero-vad (the pinned wheel's ``silero_vad.onnx``, fetched like the test corpus) keeps an LSTM state [2, batch,
128]; every 512-sample chunk (32 ms of 16 kHz audio, sent with the 64-sample context in front as the silero
package's OnnxWrapper does) needs the state of the previous one. Measured in ONE run, rounds interleaved:

  package      the silero package's own OnnxWrapper (ONNX Runtime, 1 thread), one stream, chunk after chunk
  serial       xinfer-sdk ``model.stream()``, one stream at a time (batch 1, max_batch_delay 0: its best setting;
               the one-stream-at-a-time baseline)
  embedded     ``--streams`` streams at once, one thread each, ``model.stream()`` (one core, batched on the state)
  http / grpc  the same streams through ``xinfer-sdk serve``'s server, tritonclient with sequence_id /
               sequence_start / sequence_end (one client per stream)

and prints chunks per second, the gain over ``serial``, the mean executed batch, and the largest difference of a
stream's speech probabilities from the package run alone.

    python bench/sequence.py [--streams 32] [--chunks 60] [--rounds 2] [--no-server] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from corpus import SILERO, SILERO_VAD, extract_package  # noqa: E402

import xinfer_sdk as xs  # noqa: E402

N, CTX, SR = 512, 64, 16000


def audio(k: int, chunks: int) -> np.ndarray:
    rng = np.random.default_rng(k)
    t = np.arange(N * chunks) / SR
    voiced = sum(np.sin(2 * np.pi * f * t) / i for i, f in enumerate((140 + 5 * k, 280 + 10 * k, 420 + 15 * k), 1))
    gate = (np.sin(2 * np.pi * (0.8 + 0.05 * k) * t + k) > 0).astype(np.float32)
    return (0.3 * gate * voiced + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def frames(a: np.ndarray, chunks: int) -> list[np.ndarray]:
    ctx = np.zeros(CTX, np.float32)
    out = []
    for i in range(chunks):
        x = np.concatenate([ctx, a[i * N:(i + 1) * N]])[None]
        ctx = x[0, -CTX:]
        out.append(x)
    return out


def run_package(onnx_path: Path, a: np.ndarray, chunks: int) -> tuple[np.ndarray, float]:
    import torch

    sys.path.insert(0, str(extract_package(*SILERO)))
    from silero_vad.utils_vad import OnnxWrapper

    w = OnnxWrapper(str(onnx_path), force_onnx_cpu=True)
    x = torch.from_numpy(a)
    t0 = time.perf_counter()
    probs = [float(w(x[i * N:(i + 1) * N], SR)) for i in range(chunks)]
    return np.array(probs), time.perf_counter() - t0


def run_embedded(model, fr: list[list[np.ndarray]]) -> tuple[list[np.ndarray], float]:
    got: list = [None] * len(fr)
    sr = np.array(SR, np.int64)
    barrier = threading.Barrier(len(fr) + 1)

    def one(k):
        barrier.wait()
        with model.stream() as s:
            got[k] = np.array([float(s({"input": x, "sr": sr})["output"][0, 0]) for x in fr[k]])

    ts = [threading.Thread(target=one, args=(k,)) for k in range(len(fr))]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return got, time.perf_counter() - t0


def run_client(proto: str, url: str, fr: list[list[np.ndarray]], base_id: int, name: str = "vad"
               ) -> tuple[list[np.ndarray], float]:
    if proto == "http":
        import tritonclient.http as mod
    else:
        import tritonclient.grpc as mod
    got: list = [None] * len(fr)
    barrier = threading.Barrier(len(fr) + 1)
    sr = np.array(SR, np.int64)

    def one(k):
        client = mod.InferenceServerClient(url)
        barrier.wait()
        probs = []
        for i, x in enumerate(fr[k]):
            inp = [mod.InferInput("input", list(x.shape), "FP32"), mod.InferInput("sr", [], "INT64")]
            inp[0].set_data_from_numpy(x)
            inp[1].set_data_from_numpy(sr)
            r = client.infer(name, inp, sequence_id=base_id + k, sequence_start=i == 0,
                             sequence_end=i == len(fr[k]) - 1)
            probs.append(float(r.as_numpy("output")[0, 0]))
        got[k] = np.array(probs)
        client.close()

    ts = [threading.Thread(target=one, args=(k,)) for k in range(len(fr))]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return got, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=32)
    ap.add_argument("--chunks", type=int, default=60, help="chunks per stream (32 ms each)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-server", action="store_true", help="embedded only (no HTTP / gRPC)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    onnx_path = SILERO_VAD.fetch()
    S, C = args.streams, args.chunks
    streams = [audio(k, C) for k in range(S)]
    fr = [frames(a, C) for a in streams]
    refs, pkg_s = zip(*(run_package(onnx_path, a, C) for a in streams))
    model = xs.load(onnx_path, profile="cpu", name="vad", threads=1,
                    batching={"max_batch_size": S, "max_batch_delay": "2ms"})
    single = xs.load(onnx_path, profile="cpu", name="vad1", threads=1,
                     batching={"max_batch_size": 1, "max_batch_delay": "0ms"})
    srv = None
    if not args.no_server:
        from xinfer_sdk.server.runner import Server

        srv = Server([model, single], host="127.0.0.1", port=0, grpc_port=0, gpu_metrics=False, drain_timeout=5)
        srv.start_background()
    rates: dict[str, list[float]] = {}
    diffs: dict[str, float] = {}
    batch: dict[str, list[float]] = {}
    try:
        for r in range(args.rounds):
            runs = [("serial", None), ("embedded", None)]
            if srv is not None:
                runs += [("http1", f"127.0.0.1:{srv.port}"), ("http", f"127.0.0.1:{srv.port}"),
                         ("grpc1", f"127.0.0.1:{srv.grpc_port}"), ("grpc", f"127.0.0.1:{srv.grpc_port}")]
            for name, url in runs:
                one = name in ("serial", "http1", "grpc1")
                m = single if one else model
                st0 = m.stats()["batch_size"]
                base = 10_000 * (r + 1) + (5000 if name.startswith("grpc") else 0)
                if one:  # a few streams one after the other is enough for a rate
                    got, secs = [], 0.0
                    for k in range(min(S, 4)):
                        if name == "serial":
                            g, sec = run_embedded(single, [fr[k]])
                        else:
                            g, sec = run_client(name[:-1], url, [fr[k]], base + 100 + k, "vad1")
                        got.append(g[0])
                        secs += sec
                    n = min(S, 4) * C
                elif name == "embedded":
                    got, secs = run_embedded(model, fr)
                    n = S * C
                else:
                    got, secs = run_client(name, url, fr, base)
                    n = S * C
                st1 = m.stats()["batch_size"]
                rates.setdefault(name, []).append(n / secs)
                batch.setdefault(name, []).append((st1["sum"] - st0["sum"]) / max(1, st1["count"] - st0["count"]))
                worst = max(float(np.abs(g - ref).max()) for g, ref in zip(got, refs))
                diffs[name] = max(diffs.get(name, 0.0), worst)
    finally:
        if srv is not None:
            srv.stop()
        model.close()
        single.close()
    pkg_rate = S * C / sum(pkg_s)
    base_of = {"http": "http1", "grpc": "grpc1"}
    print(f"silero-vad {SILERO[1]}: {S} streams x {C} chunks of 32 ms, {args.rounds} rounds (median), CPU, "
          "1 ORT thread per worker")
    print("x 1-stream: the gain over one stream at a time the same way (serial, http1, grpc1)")
    print(f"{'run':10} {'chunks/s':>10} {'x 1-stream':>11} {'mean batch':>11} {'max |diff| vs package':>22}")
    print(f"{'package':10} {pkg_rate:10.0f} {'':>11} {1.0:11.1f} {0.0:22.1e}")
    out = {"streams": S, "chunks": C, "package_chunks_per_s": pkg_rate}
    for name in rates:
        med = statistics.median(rates[name])
        ref = name if name in ("serial", "http1", "grpc1") else base_of.get(name, "serial")
        gain = med / statistics.median(rates[ref])
        print(f"{name:10} {med:10.0f} {gain:11.2f} {statistics.mean(batch[name]):11.1f} {diffs[name]:22.1e}")
        out[name] = {"chunks_per_s": med, "gain_over_one_stream": gain, "mean_batch": statistics.mean(batch[name]),
                     "max_abs_diff_vs_package": diffs[name]}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
