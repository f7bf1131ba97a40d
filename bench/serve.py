"""Serving benchmark: the same perf_analyzer sweep against our server and against Triton, in one run.

    python bench/serve.py [--models mlp,resnet18] [--protocols http,grpc] [--concurrency 1,4,16,32]
                          [--interval-ms 3000] [--servers ours,triton] [--threads 2] [--delay 0ms] [--workers 1]
                          [--shm] [--repeat N] [--http-port 8000 --grpc-port 8001]

Uses the anchor kit in ../shared/anchors (read its README/RESULTS.md) from where it lies, never a copy:
``setup_env.sh`` (run it once: venv with nvidia-pytriton + perf_analyzer 2.51.0 under /tmp/anchor, the two ONNX
models in /tmp/anchor/models), ``pytriton_serve.py`` (Triton 2.51 + dynamic batcher, ORT threads=2, batch 32,
1 ms queue delay) and ``bench_pa.py`` (the exact perf_analyzer command: batch-1 requests, synchronous, random
data, 3 x interval windows). Our server is started as ``python -m xinfer_sdk serve`` with its defaults (NaN and Inf
in perf_analyzer's random FP32 bytes are accepted, as by Triton), one config.yaml for both models, and stopped with
SIGTERM. Each server runs alone on the machine while it is measured; ``--repeat N`` alternates the servers N times
(ours, triton, ours, triton, ...) so both see the same drift of a shared machine.

``--shm`` adds, for every server, the same sweep with ``perf_analyzer --shared-memory system`` (tensors in POSIX
shared memory, docs/shared-memory.md), tagged ``<server>+shm``.

Prints one table: infer/s, p50, p99 for both servers and the ratios, plus the targets of issues 6 and 14:
MLP >= 3x Triton's throughput with a lower p99 (c=32); ResNet-18 at c=16 >= 0.95x the raw ORT limit with a
p99 no worse than Triton's, and >= 1.15x Triton's throughput (plain HTTP, and with shared memory). Raw JSON/CSV go
to --outdir.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANCHORS = (ROOT.parent / "shared" / "anchors") if (ROOT.parent / "shared" / "anchors").exists() else \
    Path("/work/shared/anchors")
# raw ONNX Runtime limits measured by anchors/raw_ort.py (RESULTS.md), samples/s; replaced by the limit measured
# in the same run (raw_ort.py again, before the servers) unless --no-limit-run
ORT_LIMIT = {"mlp": 74667.7, "resnet18": 105.6}


def measure_limits(a, models: list[str]) -> dict[str, float]:
    """The raw ORT limit in this run: anchors/raw_ort.py (threads 2, batch 1..32, one session, tight loop)."""
    out = Path(a.outdir) / "raw_ort.json"
    cmd = [a.ort_python, str(ANCHORS / "raw_ort.py"), "--models", a.model_dir, "--only", ",".join(models),
           "--threads", "2", "--seconds", "2", "--repeat", "1", "--json", str(out)]
    if not a.quiet_gate:
        cmd.append("--no-quiet-gate")
    subprocess.run(cmd, cwd=ANCHORS, check=False, env={**os.environ, "PYTHONPATH": str(ANCHORS)})
    if not out.exists():
        return {}
    data = json.loads(out.read_text())["models"]
    return {m: data[m]["limit"]["samples_per_s_median"] for m in models if m in data}


def wait_ready(url: str, proc: subprocess.Popen, models: list[str] = (), timeout: float = 180) -> None:
    """The server ready AND each model ready: PyTriton's Triton reports ready before its models are loaded."""
    t0 = time.time()
    paths = ["/v2/health/ready", *(f"/v2/models/{m}/ready" for m in models)]
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early (rc {proc.returncode}); see its log")
        try:
            ok = True
            for path in paths:
                with urllib.request.urlopen(url + path, timeout=2) as r:
                    ok = ok and r.status == 200
            if ok:
                return
        except OSError:
            pass
        time.sleep(1)
    proc.terminate()
    raise SystemExit(f"server at {url} not ready after {timeout}s")


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def stop(proc: subprocess.Popen, timeout: float = 60) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def start_ours(a, models: list[str], log: Path) -> subprocess.Popen:
    cfg = Path(a.outdir) / "ours_config.yaml"
    lines = ["defaults:", f"  threads: {a.threads}"]
    if a.spinning is not None:
        lines.append(f"  options: {{spinning: {str(a.spinning).lower()}}}")
    lines += [f"  batch: {{max_batch_size: 32, max_batch_delay: {a.delay}, device_concurrency: {a.workers}}}",
              "models:"]
    lines += [f"  - {{name: {m}, path: {Path(a.model_dir) / (m + '.onnx')}}}" for m in models]
    cfg.write_text("\n".join(lines) + "\n")
    cmd = [sys.executable, "-m", "xinfer_sdk", "serve", "--config", str(cfg), "--profile", "cpu",
           "--port", str(a.http_port), "--grpc-port", str(a.grpc_port)]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)


def start_triton(a, models: list[str], log: Path) -> subprocess.Popen:
    cmd = [a.anchor_python, str(ANCHORS / "pytriton_serve.py"), "--models", ",".join(models), "--dir", a.model_dir,
           "--ort-threads", str(a.triton_threads), "--duration", "3000"]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ANCHORS)


def sweep(a, tag: str, models: list[str], own: str, extra: str = "") -> dict:
    cmd = [a.anchor_python, str(ANCHORS / "bench_pa.py"), "--tag", tag, "--models", ",".join(models),
           "--protocols", a.protocols, "--concurrency", a.concurrency, "--interval-ms", str(a.interval_ms),
           "--outdir", a.outdir, "--own", own, "--http", f"127.0.0.1:{a.http_port}",
           "--grpc", f"127.0.0.1:{a.grpc_port}"]
    if extra:
        cmd.append(f"--extra={extra}")
    if not a.quiet_gate:
        cmd.append("--no-quiet-gate")
    subprocess.run(cmd, cwd=ANCHORS, check=False, env={**os.environ, "PYTHONPATH": str(ANCHORS)})
    path = Path(a.outdir) / f"pa_{tag}.json"
    return json.loads(path.read_text()) if path.exists() else {"rows": []}


def _merge(runs: list[dict]) -> dict:
    """Several sweeps of one server (--repeat): per point, the median infer/s row."""
    by: dict[tuple, list] = {}
    for res in runs:
        for r in res.get("rows", []):
            if r.get("infer_per_s"):
                by.setdefault((r["model"], r["protocol"], r["concurrency"]), []).append(r)
    rows = []
    for rs in by.values():
        rs.sort(key=lambda r: r["infer_per_s"])
        mid = dict(rs[len(rs) // 2])
        mid["all_infer_per_s"] = [round(r["infer_per_s"], 1) for r in rs]
        rows.append(mid)
    return {"rows": rows}


def table(results: dict[str, dict], models: list[str]) -> str:
    idx = {}
    for server, res in results.items():
        for r in res.get("rows", []):
            idx[(server, r["model"], r["protocol"], r["concurrency"])] = r
    keys = sorted({k[1:] for k in idx}, key=lambda k: (models.index(k[0]) if k[0] in models else 9, k[1], k[2]))
    out = ["| model | proto | conc | variant | ours infer/s (runs) | ours p50 ms | ours p99 ms | triton infer/s (runs) | "
           "triton p50 ms | triton p99 ms | ours/triton | ours/ORT limit |", "|" + "---|" * 12]

    def f(v, d=1):
        return "-" if v is None else f"{v:.{d}f}"

    def runs(r):
        a = r.get("all_infer_per_s")
        return f" ({'/'.join(map(str, a))})" if a and len(a) > 1 else ""

    variants = [v for v in ("", "+shm") if any(s.endswith(v) and (v or "+" not in s) for s in results)]
    for m, p, c in keys:
        for v in variants:
            o, t = idx.get(("ours" + v, m, p, c), {}), idx.get(("triton" + v, m, p, c), {})
            if not o and not t:
                continue
            oi, ti = o.get("infer_per_s"), t.get("infer_per_s")
            ratio = f"{oi / ti:.2f}x" if oi and ti else "-"
            lim = f"{oi / ORT_LIMIT[m]:.3f}" if oi and m in ORT_LIMIT else "-"
            out.append(f"| {m} | {p} | {c} | {v.lstrip('+') or 'body'} | {f(oi)}{runs(o)} | {f(o.get('p50_ms'), 2)} | "
                       f"{f(o.get('p99_ms'), 2)} | {f(ti)}{runs(t)} | {f(t.get('p50_ms'), 2)} | {f(t.get('p99_ms'), 2)} | "
                       f"{ratio} | {lim} |")
    verdicts = []
    for p in sorted({k[1] for k in keys}):
        o, t = idx.get(("ours", "mlp", p, 32)), idx.get(("triton", "mlp", p, 32))
        if o and t and o.get("infer_per_s") and t.get("infer_per_s"):
            ok = o["infer_per_s"] >= 3 * t["infer_per_s"] and o["p99_ms"] < t["p99_ms"]
            verdicts.append(f"- mlp {p} c=32: {o['infer_per_s'] / t['infer_per_s']:.2f}x Triton, p99 "
                            f"{o['p99_ms']:.2f} vs {t['p99_ms']:.2f} ms -> target (>=3x, lower p99) "
                            f"{'MET' if ok else 'NOT MET'}")
        for v in variants:
            o, t = idx.get(("ours" + v, "resnet18", p, 16)), idx.get(("triton", "resnet18", p, 16))
            if o and o.get("infer_per_s"):
                ratio = o["infer_per_s"] / ORT_LIMIT["resnet18"]
                ok = ratio >= 0.95 and (not t or not t.get("p99_ms") or o["p99_ms"] <= t["p99_ms"])
                tp = f"{t['p99_ms']:.1f}" if t and t.get("p99_ms") else "-"
                verdicts.append(f"- resnet18 {p}{v} c=16: {ratio:.3f} of the ORT limit ({ORT_LIMIT['resnet18']:.1f}/s), "
                                f"p99 {o['p99_ms']:.1f} vs Triton {tp} ms -> target (>=0.95, p99 <= Triton) "
                                f"{'MET' if ok else 'NOT MET'}")
                if t and t.get("infer_per_s"):
                    x = o["infer_per_s"] / t["infer_per_s"]
                    verdicts.append(f"- resnet18 {p}{v} c=16: {x:.2f}x Triton (plain HTTP Triton) -> target (>=1.15x) "
                                    f"{'MET' if x >= 1.15 else 'NOT MET'}")
    return "\n".join(out + [""] + verdicts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,resnet18")
    ap.add_argument("--protocols", default="http,grpc")
    ap.add_argument("--concurrency", default="1,4,16,32")
    ap.add_argument("--interval-ms", type=int, default=3000)
    ap.add_argument("--servers", default="ours,triton")
    ap.add_argument("--threads", type=int, default=2, help="our ORT intra-op threads per worker")
    ap.add_argument("--workers", type=int, default=1, help="our workers (device_concurrency)")
    ap.add_argument("--delay", default="0ms", help="our max_batch_delay")
    ap.add_argument("--spinning", action=argparse.BooleanOptionalAction, default=None,
                    help="ORT intra-op spin-waiting in our server (default: the product's: off in a server)")
    ap.add_argument("--triton-threads", type=int, default=2, help="ORT threads in Triton's model (anchors: 2)")
    ap.add_argument("--model-dir", default="/tmp/anchor/models")
    ap.add_argument("--anchor-python", default="/tmp/anchor/venv/bin/python")
    ap.add_argument("--ort-python", default=sys.executable,
                    help="interpreter for the raw ORT limit run (default: this one, i.e. our server's onnxruntime)")
    ap.add_argument("--quiet-gate", action="store_true", help="wait for an idle machine before each point")
    ap.add_argument("--outdir", default=None)
    ap.add_argument("--shm", action="store_true", help="also sweep with perf_analyzer --shared-memory system")
    ap.add_argument("--repeat", type=int, default=1, help="alternate the servers this many times (median reported)")
    ap.add_argument("--http-port", type=int, default=8000, help="our server's HTTP port (Triton's is 8000)")
    ap.add_argument("--grpc-port", type=int, default=8001, help="our server's gRPC port (Triton's is 8001)")
    ap.add_argument("--no-limit-run", dest="limit_run", action="store_false",
                    help="use RESULTS.md's raw ORT limits instead of measuring them in this run")
    a = ap.parse_args()
    models = a.models.split(",")
    missing = [m for m in models if not (Path(a.model_dir) / f"{m}.onnx").exists()]
    if missing or not Path(a.anchor_python).exists():
        raise SystemExit(f"anchor environment missing ({missing or a.anchor_python}); run: bash {ANCHORS}/setup_env.sh")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    a.outdir = a.outdir or str(ROOT / "bench" / "results" / f"serve-{stamp}")
    Path(a.outdir).mkdir(parents=True, exist_ok=True)
    limits_note = "raw ORT limits from anchors/RESULTS.md"
    if a.limit_run:
        measured = measure_limits(a, models)
        if measured:
            ORT_LIMIT.update(measured)
            limits_note = "raw ORT limits measured in this run: " + ", ".join(f"{m} {v:.1f}/s" for m, v in measured.items())
    runs: dict[str, list[dict]] = {}
    for rep in range(a.repeat):
        for server in a.servers.split(","):
            ports = (a.http_port, a.grpc_port) if server == "ours" else (8000, 8001)
            for _ in range(60):
                if all(port_free(pt) for pt in ports):
                    break
                time.sleep(1)
            log = Path(a.outdir) / f"{server}-{rep}.log"
            proc = (start_ours if server == "ours" else start_triton)(a, models, log)
            saved = (a.http_port, a.grpc_port)
            a.http_port, a.grpc_port = ports
            try:
                wait_ready(f"http://127.0.0.1:{ports[0]}", proc, list(models))
                time.sleep(2)
                own = "xinfer_sdk" if server == "ours" else "tritonserver,triton_python_backend_stub,pytriton_serve"
                runs.setdefault(server, []).append(sweep(a, f"{server}-{stamp}-{rep}", models, own))
                if a.shm:
                    runs.setdefault(server + "+shm", []).append(
                        sweep(a, f"{server}+shm-{stamp}-{rep}", models, own, "--shared-memory system"))
            finally:
                a.http_port, a.grpc_port = saved
                rc = stop(proc)
                print(f"{server}: stopped, exit code {rc}", flush=True)
    results = {server: _merge(rs) for server, rs in runs.items()}
    settings = (f"repeat={a.repeat}; ours: threads={a.threads} workers={a.workers} max_batch_delay={a.delay} spinning={'default (off)' if a.spinning is None else a.spinning}; "
                f"triton: ORT threads={a.triton_threads}, dynamic batcher max_batch 32, 1 ms delay")
    text = f"# serving benchmark {stamp} (UTC)\n\n{settings}\n{limits_note}\n\n{table(results, models)}\n"
    (Path(a.outdir) / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
