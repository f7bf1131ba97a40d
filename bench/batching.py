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

``encoder`` (padded batching, issue 14): a 2-layer BERT-style encoder (int64 input_ids + attention_mask, dynamic
batch and sequence axes) driven by 64 ``infer_async`` callers with lengths uniform in 8..128, served twice in the
same run, rounds interleaved: ``equal`` merges only equal shapes (no declaration), ``padded`` declares
``padding:`` (pad value 0 on the sequence axis, buckets of 16, the hidden states cropped back). ``fixed64`` (every
request 64 tokens, no padding) is the reference the issue measured; ``ceiling`` (every request at the mean length,
68 tokens) is what padding could reach at best: full batches and no padded token. Prints padded / equal (the
median and the range over the segments), the machine's load average before and after (the noise), the cost model
the batcher fitted (fixed cost of a run in tokens, cost per token, padded tokens per real one), the per-request
cost that model predicts for each row, and the largest difference between a caller's padded answer and the same
request run alone.

    python bench/batching.py [--seconds 3] [--rounds 3] [--models mlp,resnet18,encoder] [--json out.json]
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
# padded batching: the encoder's policy, lengths and buckets (docs/batching.md explains the choice)
ENCODER_POLICY = dict(max_batch_size=32, max_batch_delay="2ms", device_concurrency=1)
LENGTHS = (8, 128)
BUCKETS = [16, 32, 48, 64, 80, 96, 112, 128]


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


def make_encoder(path: Path, layers: int = 2, hidden: int = 64, heads: int = 2, inter: int = 256,
                 vocab: int = 8000, max_len: int = 512) -> Path:
    """A BERT-style encoder: token + position embeddings, ``layers`` post-LN blocks with additive attention mask;
    input_ids / attention_mask [batch, seq] int64 -> last_hidden_state [batch, seq, hidden]."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    if path.exists():
        return path
    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def w(name, *dims, scale=0.05):
        inits.append(numpy_helper.from_array((rng.standard_normal(dims) * scale).astype(np.float32), name))
        return name

    def const(name, values, dtype=np.int64):
        inits.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def node(op, ins, out, **kw):
        nodes.append(helper.make_node(op, ins, [out], **kw))
        return out

    def linear(x, name, cin, cout):
        return node("Add", [node("MatMul", [x, w(name + ".w", cin, cout)], name + ".mm"), w(name + ".b", cout)], name)

    def layernorm(x, name):
        g = const(name + ".g", np.ones(hidden), np.float32)
        b = const(name + ".b", np.zeros(hidden), np.float32)
        return node("LayerNormalization", [x, g, b], name, axis=-1, epsilon=1e-12)

    hd = hidden // heads
    seq = node("Gather", [node("Shape", ["input_ids"], "shape"), const("one_i", 1)], "seq")
    pos = node("Range", [const("zero_i", 0), seq, const("step", 1)], "pos")
    x = node("Add", [node("Gather", [w("emb.word", vocab, hidden), "input_ids"], "e.word"),
                     node("Gather", [w("emb.pos", max_len, hidden), pos], "e.pos")], "e.sum")
    x = layernorm(x, "e.ln")
    m = node("Cast", [node("Unsqueeze", ["attention_mask", const("axes12", [1, 2])], "m.u")], "m.f", to=T.FLOAT)
    mask = node("Mul", [node("Sub", [const("one_f", 1.0, np.float32), m], "m.inv"),
                        const("neg", -10000.0, np.float32)], "mask")
    split = const("heads_shape", [0, 0, heads, hd])
    merge = const("merge_shape", [0, 0, hidden])
    for i in range(layers):
        p = f"l{i}"
        q, k, v = (node("Transpose", [node("Reshape", [linear(x, f"{p}.{t}", hidden, hidden), split], f"{p}.{t}.h")],
                        f"{p}.{t}.t", perm=[0, 2, 3, 1] if t == "k" else [0, 2, 1, 3]) for t in ("q", "k", "v"))
        s_ = node("Div", [node("MatMul", [q, k], p + ".s"), const(p + ".scale", hd ** 0.5, np.float32)], p + ".ss")
        att = node("Softmax", [node("Add", [s_, mask], p + ".sm")], p + ".p", axis=-1)
        ctx = node("Reshape", [node("Transpose", [node("MatMul", [att, v], p + ".c")], p + ".ct", perm=[0, 2, 1, 3]),
                               merge], p + ".cm")
        x1 = layernorm(node("Add", [linear(ctx, p + ".o", hidden, hidden), x], p + ".r1"), p + ".ln1")
        f = linear(x1, p + ".f1", hidden, inter)
        gelu = node("Mul", [f, node("Sigmoid", [node("Mul", [f, const(p + ".gk", 1.702, np.float32)], p + ".fk")],
                                    p + ".sg")], p + ".gelu")
        x = layernorm(node("Add", [linear(gelu, p + ".f2", inter, hidden), x1], p + ".r2"), p + ".ln2")
    nodes[-1].output[0] = "last_hidden_state"
    ins = [helper.make_tensor_value_info(n, T.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask")]
    out = helper.make_tensor_value_info("last_hidden_state", T.FLOAT, ["batch", "seq", hidden])
    model = helper.make_model(helper.make_graph(nodes, "encoder", ins, [out], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def encoder_bundle(onnx_path: Path, root: Path, padding: dict | None) -> Path:
    """A bundle of the unchanged graph, with or without the padding declaration in its manifest."""
    import shutil

    sys.path.insert(0, str(HERE.parent))
    from converters import graph
    from xinfer_sdk.bundle import Manifest, register, save_manifest

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    shutil.copyfile(onnx_path, root / "model.onnx")
    ins, outs, _ = graph.io_specs(graph.load(onnx_path))
    m = Manifest(name="encoder", inputs=ins, outputs=outs, precision="fp32", max_batch_size=64, profile={},
                 batch={}, padding=padding)
    register(root, m, "model.onnx", role="model")
    save_manifest(root, m)
    return root


def text_requests(count: int, lengths: tuple[int, int] | int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = lengths if isinstance(lengths, int) else int(rng.integers(lengths[0], lengths[1] + 1))
        ids = rng.integers(1, 8000, (1, n), dtype=np.int64)
        out.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    return out


def text_load(model, reqs: list[dict], seconds: float) -> dict:
    """64 asyncio callers, each cycling through its share of ``reqs``."""
    counts = [0] * CALLERS
    stop = time.perf_counter() + seconds

    async def caller(i: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            await model.infer_async(reqs[(i + n * CALLERS) % len(reqs)])
            n += 1
        counts[i] = n

    async def main() -> None:
        await asyncio.gather(*(caller(i) for i in range(CALLERS)))

    before = model.stats()
    c0, t0 = cpu_seconds(), time.perf_counter()
    asyncio.run(main())
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    after = model.stats()
    n_b = after["batches"] - before["batches"]
    # req per CPU-second: what the process got done per core-second it was given (steadier than req/s on a
    # machine shared with other jobs)
    return {"req_per_s": sum(counts) / wall, "req_per_cpu_s": sum(counts) / cpu if cpu > 0 else 0.0,
            "mean_batch": (after["samples"] - before["samples"]) / n_b if n_b else 0.0}


def run_encoder(args) -> dict:
    """Padded vs equal-shape batching on the encoder, side by side; the padded answers checked."""
    base = Path(args.models_dir)
    h = args.encoder_hidden
    path = make_encoder(base / f"encoder-h{h}.onnx", hidden=h, heads=max(1, h // 32), inter=4 * h)
    decl = {"inputs": {"input_ids": {"axis": 1, "value": 0}, "attention_mask": {"axis": 1, "value": 0}},
            "buckets": BUCKETS, "outputs": {"last_hidden_state": 1}}
    bundles = {"equal": encoder_bundle(path, base / "encoder-equal.xinfer", None),
               "padded": encoder_bundle(path, base / "encoder-padded.xinfer", decl)}
    policy = xs.BatchPolicy(**ENCODER_POLICY)
    varied = text_requests(1024, LENGTHS, 2)
    fixed = text_requests(256, 64, 3)
    mean_len = sum(LENGTHS) // 2
    ceiling = text_requests(256, mean_len, 4)
    rounds: dict[str, list] = {"equal": [], "padded": [], "fixed64": [], "ceiling": []}
    # both models stay loaded; short segments alternate (the order flips each time), so slow changes in what else
    # runs on the machine hit both alike; a round is 3 segments of each
    seg = max(0.5, args.seconds / 3)
    opts = {"spinning": args.spinning}
    kw = dict(profile="cpu", batching=policy, options=opts, threads=args.threads)
    with xs.load(bundles["equal"], **kw) as equal, xs.load(bundles["padded"], **kw) as padded:
        models = {"equal": equal, "padded": padded, "fixed64": equal, "ceiling": equal}
        data = {"equal": varied, "padded": varied, "fixed64": fixed, "ceiling": ceiling}
        for mode in models:
            text_load(models[mode], data[mode], 0.5)  # warm
        max_diff = check_padded(padded, bundles["equal"], varied[:256], policy)
        load_before = os.getloadavg()
        for r in range(args.rounds):
            for k in range(3):
                pair = ("equal", "padded") if (r * 3 + k) % 2 == 0 else ("padded", "equal")
                for mode in (*pair, "fixed64", "ceiling"):
                    rounds[mode].append(text_load(models[mode], data[mode], seg))
            eq, pd = (_med_round(rounds[m][-3:]) for m in ("equal", "padded"))
            print(f"encoder   round {r}: equal {eq['req_per_s']:8.1f}/s (batch {eq['mean_batch']:.1f}) | padded "
                  f"{pd['req_per_s']:8.1f}/s (batch {pd['mean_batch']:.1f}) | {pd['req_per_s'] / eq['req_per_s']:.2f}x, "
                  f"per CPU-second {pd['req_per_cpu_s'] / eq['req_per_cpu_s']:.2f}x | fixed 64 "
                  f"{_med_round(rounds['fixed64'][-3:])['req_per_s']:8.1f}/s | ceiling ({mean_len} tokens) "
                  f"{_med_round(rounds['ceiling'][-3:])['req_per_s']:8.1f}/s | load {os.getloadavg()[0]:.1f}",
                  flush=True)
        fit = padded._batcher.pad_cost.fit()  # the cost model the padded batches were chosen by
    med = statistics.median
    out = {"policy": policy.to_dict(), "buckets": BUCKETS, "lengths": list(LENGTHS), "max_abs_diff": max_diff,
           "hidden": h, "mean_len": mean_len, "fit": fit,
           "loadavg": {"before": list(load_before), "after": list(os.getloadavg())}}
    for mode, rs in rounds.items():
        out[mode] = {k: med(x[k] for x in rs) for k in ("req_per_s", "req_per_cpu_s", "mean_batch")}
    pairs = list(zip(rounds["padded"], rounds["equal"]))
    ratios = [p["req_per_s"] / e["req_per_s"] for p, e in pairs]
    per_cpu = [p["req_per_cpu_s"] / e["req_per_cpu_s"] for p, e in pairs]
    out["ratio"], out["ratio_range"] = med(ratios), [min(ratios), max(ratios)]
    out["ratio_per_cpu_s"], out["ratio_per_cpu_s_range"] = med(per_cpu), [min(per_cpu), max(per_cpu)]
    out["ceiling_per_cpu_s"] = out["ceiling"]["req_per_cpu_s"] / out["equal"]["req_per_cpu_s"]
    # the most padding can give with these buckets: batches as full as the ceiling's, each one computing
    # ``padded_per_real`` tokens per token of its requests
    if fit["padded_per_real"]:
        out["bound_per_cpu_s"] = out["ceiling_per_cpu_s"] / fit["padded_per_real"]
    return out


def _med_round(rs: list[dict]) -> dict:
    return {k: statistics.median(x[k] for x in rs) for k in ("req_per_s", "req_per_cpu_s", "mean_batch")}


def check_padded(model, equal_bundle: Path, reqs: list[dict], policy) -> float:
    """Every caller's padded answer against the same request run alone (unpadded): the largest difference."""
    async def all_at_once(m) -> list[dict]:
        return await asyncio.gather(*(m.infer_async(x) for x in reqs))

    padded = asyncio.run(all_at_once(model))
    with xs.load(equal_bundle, profile="cpu", batching=xs.BatchPolicy(max_batch_size=1)) as alone:
        ref = [alone.infer(x) for x in reqs]
    diff = 0.0
    for p, a in zip(padded, ref):
        if p["last_hidden_state"].shape != a["last_hidden_state"].shape:
            raise AssertionError(f"padded answer has shape {p['last_hidden_state'].shape}, "
                                 f"expected {a['last_hidden_state'].shape}")
        diff = max(diff, float(np.abs(p["last_hidden_state"] - a["last_hidden_state"]).max()))
    return diff


def run(args) -> dict:
    names = args.models.split(",")
    paths = make_models(Path(args.models_dir)) if set(names) - {"encoder"} else {}
    results: dict = {}
    for name in names:
        if name == "encoder":
            results[name] = run_encoder(args)
            continue
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
    enc = results.pop("encoder", None)
    if enc is not None:
        print(f"\n| encoder, 64 callers, lengths {enc['lengths'][0]}..{enc['lengths'][1]} | req/s | req per CPU-s "
              "| mean batch |")
        print("|---|---|---|---|")
        for mode, label in (("equal", "equal shapes only"), ("padded", f"padded, buckets {enc['buckets']}"),
                            ("fixed64", "every request 64 tokens (reference)"),
                            ("ceiling", f"every request {enc['mean_len']} tokens (the ceiling: mean length)")):
            m = enc[mode]
            print(f"| {label} | {m['req_per_s']:.1f} | {m['req_per_cpu_s']:.1f} | {m['mean_batch']:.1f} |")
        lo, hi = enc["ratio_range"]
        clo, chi = enc["ratio_per_cpu_s_range"]
        print(f"padded / equal (median of the segments): {enc['ratio']:.2f}x in req/s (segments {lo:.2f}..{hi:.2f}), "
              f"{enc['ratio_per_cpu_s']:.2f}x per CPU-second ({clo:.2f}..{chi:.2f}); ceiling / equal per CPU-second "
              f"{enc['ceiling_per_cpu_s']:.2f}x")
        la = enc["loadavg"]
        print(f"load average (1 min) before {la['before'][0]:.1f}, after {la['after'][0]:.1f} on {os.cpu_count()} CPUs; "
              f"largest difference of a padded answer from the request run alone: {enc['max_abs_diff']:.2e}")
        fit = enc["fit"]
        if fit["overhead_tokens"] is not None:
            print(f"cost model fitted by the padded batcher: a run = {fit['overhead_tokens']:.0f} tokens of fixed cost "
                  f"+ {fit['us_per_token']:.2f} us per padded token")
        if "bound_per_cpu_s" in enc:
            print(f"padding cost: {fit['padded_per_real']:.2f} padded tokens per real one; with batches as full as the "
                  f"ceiling's, padded / equal could reach at most {enc['ceiling_per_cpu_s']:.2f} / "
                  f"{fit['padded_per_real']:.2f} = {enc['bound_per_cpu_s']:.2f}x per CPU-second")
        if not results:
            return
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
    ap.add_argument("--models", default="mlp,resnet18,encoder")
    ap.add_argument("--models-dir", default=os.path.join(tempfile.gettempdir(), "xinfer-bench-models"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--encoder-hidden", type=int, default=64, help="encoder: hidden size (heads = hidden / 32)")
    ap.add_argument("--threads", type=int, default=None, help="encoder: intra-op threads per worker (default: the "
                    "runtime's choice for the cores)")
    ap.add_argument("--spinning", type=int, default=0,
                    help="encoder: ONNX Runtime thread spinning (0: off, so CPU-seconds count work, not waiting)")
    args = ap.parse_args()
    results = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    report(results)


if __name__ == "__main__":
    main()
