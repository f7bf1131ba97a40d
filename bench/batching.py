"""The batching core against the limit: 64 concurrent batch-1 callers vs raw ONNX Runtime at its best batch.

For ResNet-18 (compute-bound) and the 784-1024-1024-10 MLP (overhead-bound), made by
../shared/anchors/make_models.py (the models Triton was measured with; falls back to examples/models.py),
this measures in ONE run, interleaving rounds because the machine is shared and noisy:

  limit      raw onnxruntime, one session (2 intra-op threads), best batch size, tight loop
  async      64 asyncio callers: `await model.infer_async(x)` (one event loop thread: the server's path)
  wrapped    64 asyncio callers: `await asyncio.wrap_future(model.submit(x))`
  threads    64 OS threads: `model.submit(x).result()` (blocking callers)
  low load   1 caller, sequential: added p50 latency over a raw batch-1 run, vs max_batch_delay + 1 ms

and prints ratios to the limit, the mean executed batch, and the CPU microseconds per request spent outside
the engine (process CPU time per request minus the raw engine's CPU time per sample at the same batch).

    python bench/batching.py [--seconds 3] [--rounds 3] [--models mlp,resnet18] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import xinfer_sdk as xs

HERE = Path(__file__).resolve().parent
ANCHORS = HERE.parent.parent / "shared" / "anchors"
SHAPES = {"mlp": (784,), "resnet18": (3, 224, 224)}
# Policies used for the two models (what `xinfer-sdk tune` would pick on this machine; printed with the results).
POLICY = {
    "mlp": dict(max_batch_size=64, max_batch_delay="1ms", device_concurrency=1),
    "resnet18": dict(max_batch_size=8, max_batch_delay="2ms", device_concurrency=1),
}
RAW_BATCHES = {"mlp": (1, 16, 32, 64, 128), "resnet18": (1, 4, 8, 16)}
CALLERS = 64


def make_models(out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"mlp": out / "mlp.onnx", "resnet18": out / "resnet18.onnx"}
    if all(p.exists() for p in paths.values()):
        return paths
    script = ANCHORS / "make_models.py"
    if script.exists():
        subprocess.run([sys.executable, str(script), "--out", str(out)], check=True)
    else:  # the project's own copies of the same topologies
        import torch

        sys.path.insert(0, str(HERE.parent))
        from examples.models import _export, resnet18_onnx

        torch.manual_seed(0)
        mlp = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                                  torch.nn.ReLU(), torch.nn.Linear(1024, 10)).eval()
        _export(mlp, (torch.randn(1, 784),), paths["mlp"], ["input"], ["output"])
        resnet18_onnx(paths["resnet18"])
    return paths


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def raw_limit(path: Path, name: str, seconds: float) -> dict:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    best = {"samples_per_s": 0.0}
    lat1 = None
    for bs in RAW_BATCHES[name]:
        x = {"input": rng.standard_normal((bs, *SHAPES[name]), dtype=np.float32)}
        for _ in range(3):
            sess.run(None, x)
        lats = []
        c0, t0 = cpu_seconds(), time.perf_counter()
        while time.perf_counter() - t0 < seconds / len(RAW_BATCHES[name]) or len(lats) < 5:
            t = time.perf_counter()
            sess.run(None, x)
            lats.append(time.perf_counter() - t)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        sps = len(lats) * bs / wall
        if bs == 1:
            lat1 = float(np.median(lats))
        if sps > best["samples_per_s"]:
            best = {"samples_per_s": sps, "batch": bs, "cpu_us_per_sample": cpu / (len(lats) * bs) * 1e6}
    best["p50_batch1_s"] = lat1
    return best


def closed_loop(model, x: np.ndarray, mode: str, seconds: float) -> dict:
    counts = [0] * CALLERS
    stop = time.perf_counter() + seconds
    feed = {"input": x}
    c0, t0 = cpu_seconds(), time.perf_counter()
    if mode == "threads":
        def caller(i: int) -> None:
            n = 0
            while time.perf_counter() < stop:
                model.submit(feed).result()
                n += 1
            counts[i] = n

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        async def caller(i: int) -> None:
            n = 0
            while time.perf_counter() < stop:
                if mode == "async":
                    await model.infer_async(feed)
                else:
                    await asyncio.wrap_future(model.submit(feed))
                n += 1
            counts[i] = n

        async def main() -> None:
            await asyncio.gather(*(caller(i) for i in range(CALLERS)))

        asyncio.run(main())
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    total = sum(counts)
    return {"req_per_s": total / wall, "cpu_us_per_req": cpu / total * 1e6}


def low_load(model, x: np.ndarray, seconds: float) -> float:
    lats = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        t = time.perf_counter()
        model.infer({"input": x})
        lats.append(time.perf_counter() - t)
    return float(np.median(lats))


def run(args) -> dict:
    paths = make_models(Path(args.models_dir))
    results: dict = {}
    for name in args.models.split(","):
        path = paths[name]
        x = np.random.default_rng(1).standard_normal((1, *SHAPES[name]), dtype=np.float32)
        policy = xs.BatchPolicy(**POLICY[name])
        rounds: dict[str, list] = {k: [] for k in ("limit", "async", "wrapped", "threads", "low")}
        for r in range(args.rounds):
            rounds["limit"].append(raw_limit(path, name, args.seconds))
            with xs.load(path, profile="cpu", batching=policy) as model:
                for mode in ("async", "wrapped", "threads"):
                    before = model.stats()
                    res = closed_loop(model, x, mode, args.seconds)
                    after = model.stats()
                    n_b = after["batches"] - before["batches"]
                    res["mean_batch"] = (after["samples"] - before["samples"]) / n_b if n_b else 0.0
                    rounds[mode].append(res)
                rounds["low"].append(low_load(model, x, min(args.seconds, 2.0)))
            lim = rounds["limit"][-1]["samples_per_s"]
            print(f"{name:9s} round {r}: limit {lim:9.1f}/s (batch {rounds['limit'][-1]['batch']}) | "
                  + " | ".join(f"{m} {rounds[m][-1]['req_per_s']:9.1f}/s ({rounds[m][-1]['req_per_s'] / lim:.2f}x, "
                               f"batch {rounds[m][-1]['mean_batch']:.1f})" for m in ("async", "wrapped", "threads")),
                  flush=True)
        med = statistics.median
        limit = med(r["samples_per_s"] for r in rounds["limit"])
        engine_us = med(r["cpu_us_per_sample"] for r in rounds["limit"])
        raw_p50 = med(r["p50_batch1_s"] for r in rounds["limit"])
        out = {"policy": policy.to_dict(), "limit_samples_per_s": limit,
               "limit_batch": rounds["limit"][-1]["batch"], "engine_cpu_us_per_sample": engine_us}
        for mode in ("async", "wrapped", "threads"):
            rps = med(r["req_per_s"] for r in rounds[mode])
            out[mode] = {"req_per_s": rps, "ratio_to_limit": rps / limit,
                         "mean_batch": med(r["mean_batch"] for r in rounds[mode]),
                         "overhead_cpu_us_per_req": med(r["cpu_us_per_req"] for r in rounds[mode]) - engine_us}
        low = med(rounds["low"])
        out["low_load"] = {"p50_s": low, "raw_batch1_p50_s": raw_p50, "added_p50_s": low - raw_p50,
                           "budget_s": policy.max_batch_delay + 0.001}
        results[name] = out
    return results


def report(results: dict) -> None:
    print("\n| model | limit (raw ORT, best batch) | caller | req/s | ratio | mean batch | overhead CPU us/req |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        for mode in ("async", "wrapped", "threads"):
            m = r[mode]
            print(f"| {name} | {r['limit_samples_per_s']:.1f}/s (bs {r['limit_batch']}) | {mode} | "
                  f"{m['req_per_s']:.1f} | {m['ratio_to_limit']:.2f} | {m['mean_batch']:.1f} | "
                  f"{m['overhead_cpu_us_per_req']:.1f} |")
    print("\n| model | policy | low-load p50 | raw batch-1 p50 | added | budget (delay + 1 ms) |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        lo = r["low_load"]
        pol = r["policy"]
        print(f"| {name} | max_batch {pol['max_batch_size']}, delay {pol['max_batch_delay']} | {lo['p50_s'] * 1e3:.2f} ms "
              f"| {lo['raw_batch1_p50_s'] * 1e3:.2f} ms | {lo['added_p50_s'] * 1e3:.2f} ms | {lo['budget_s'] * 1e3:.2f} ms |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="mlp,resnet18")
    ap.add_argument("--models-dir", default=os.path.join(tempfile.gettempdir(), "xinfer-bench-models"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    results = run(args)
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
