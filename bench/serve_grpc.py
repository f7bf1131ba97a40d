"""gRPC serving benchmark: our server with the native gRPC endpoint vs with grpc.aio vs Triton, one run.

    python bench/serve_grpc.py [--models mlp,resnet18] [--concurrency 1,4,16,32] [--interval-ms 3000]
                               [--servers native,grpcio,triton] [--rounds 1] [--threads 2] [--delay 0ms]

The same perf_analyzer command as bench/serve.py (the anchor kit's ``bench_pa.py``: batch-1 synchronous gRPC
requests, random data, 3 windows of --interval-ms), one point at a time, servers one after the other (each
alone on the machine while measured; ``--rounds 2`` repeats the whole sequence to show drift on this shared
VM). Our server is ``python -m xinfer_sdk serve --grpc-impl native|grpcio`` with the same config.yaml as
bench/serve.py. Besides infer/s and p50/p99 it records, per point, the CPU the server's processes used per
request (all threads: event loop + batching core + ORT), the client's (perf_analyzer) share, and the CPU
other tenants of the VM took (``foreign``): on a shared 2-vCPU VM the first is the steadier figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import serve as S  # noqa: E402  (bench/serve.py: anchors, start/stop helpers)

sys.path.insert(0, str(S.ANCHORS))
import cpuwatch  # noqa: E402  (the anchor kit's CPU accounting)

OWN = {"native": ["xinfer_sdk serve"], "grpcio": ["xinfer_sdk serve"],
       "triton": ["tritonserver", "triton_python_backend_stub", "pytriton_serve"]}
HZ = os.sysconf("SC_CLK_TCK")


def start(a, server: str, models: list[str], log: Path) -> subprocess.Popen:
    if server == "triton":
        return S.start_triton(a, models, log)
    cfg = Path(a.outdir) / "ours_config.yaml"
    lines = ["defaults:", f"  threads: {a.threads}", "  options: {spinning: false}",
             f"  batch: {{max_batch_size: 32, max_batch_delay: {a.delay}, device_concurrency: {a.workers}}}",
             "models:"]
    lines += [f"  - {{name: {m}, path: {Path(a.model_dir) / (m + '.onnx')}}}" for m in models]
    cfg.write_text("\n".join(lines) + "\n")
    cmd = [sys.executable, "-m", "xinfer_sdk", "serve", "--config", str(cfg), "--profile", "cpu",
           "--port", "8000", "--grpc-port", "8001", "--grpc-impl", server]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=S.ROOT)


def wait_models(url: str, models: list[str], timeout: float = 180) -> None:
    """Triton answers /v2/health/ready before its models have loaded: wait for each model too."""
    import urllib.request

    t0 = time.time()
    for m in models:
        while time.time() - t0 < timeout:
            try:
                with urllib.request.urlopen(f"{url}/v2/models/{m}/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.5)


def point(a, server: str, tag: str, model: str, conc: int) -> dict:
    """One perf_analyzer point through bench_pa.py, with the server's CPU charged per request."""
    before = cpuwatch._own_proc_jiffies(OWN[server])
    t0 = time.time()
    cmd = [a.anchor_python, str(S.ANCHORS / "bench_pa.py"), "--tag", tag, "--models", model, "--protocols", "grpc",
           "--concurrency", str(conc), "--interval-ms", str(a.interval_ms), "--outdir", a.outdir,
           "--own", ",".join(OWN[server]), "--no-quiet-gate"]
    subprocess.run(cmd, cwd=S.ANCHORS, check=False, env={**os.environ, "PYTHONPATH": str(S.ANCHORS)},
                   stdout=subprocess.DEVNULL)
    after = cpuwatch._own_proc_jiffies(OWN[server])
    wall = time.time() - t0
    path = Path(a.outdir) / f"pa_{tag}.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    row = dict(rows[0]) if rows else {"model": model, "protocol": "grpc", "concurrency": conc}
    cpu_s = sum(j - before.get(pid, j) for pid, j in after.items()) / HZ
    row["server_cpu_cores"] = round(cpu_s / wall, 3)  # averaged over the whole bench_pa call (incl. its warm-up)
    if row.get("infer_per_s"):
        row["server_cpu_us_per_req"] = round(row["server_cpu_cores"] / row["infer_per_s"] * 1e6, 1)
    return row


def table(results: dict[str, list[dict]], servers: list[str]) -> str:
    idx: dict[tuple, list[dict]] = {}
    for server, rows in results.items():
        for r in rows:
            idx.setdefault((server, r["model"], r["concurrency"]), []).append(r)
    keys = sorted({k[1:] for k in idx}, key=lambda k: (k[0], k[1]))

    def med(rows, key):
        v = [r[key] for r in rows if r.get(key) is not None]
        return statistics.median(v) if v else None

    def f(v, d=1):
        return "-" if v is None else f"{v:.{d}f}"

    head = "| model | conc |" + "".join(f" {s} infer/s | {s} p50 ms | {s} p99 ms | {s} CPU us/req |" for s in servers)
    head += " native/grpcio | native/triton | foreign CPU % |"
    out = [head, "|" + "---|" * (2 + 4 * len(servers) + 3)]
    for m, c in keys:
        cells, ips = [], {}
        for s in servers:
            rows = idx.get((s, m, c), [])
            ips[s] = med(rows, "infer_per_s")
            cells += [f(ips[s]), f(med(rows, "p50_ms"), 2), f(med(rows, "p99_ms"), 2),
                      f(med(rows, "server_cpu_us_per_req"), 0)]
        foreign = [r.get("foreign_pct") for s in servers for r in idx.get((s, m, c), []) if r.get("foreign_pct")
                   is not None]

        def ratio(x, y, ips=ips):
            return f"{ips[x] / ips[y]:.2f}x" if ips.get(x) and ips.get(y) else "-"

        out.append(f"| {m} | {c} | " + " | ".join(cells) + f" | {ratio('native', 'grpcio')} | "
                   f"{ratio('native', 'triton')} | {f(max(foreign) if foreign else None, 0)} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,resnet18")
    ap.add_argument("--concurrency", default="1,4,16,32")
    ap.add_argument("--interval-ms", type=int, default=3000)
    ap.add_argument("--servers", default="native,grpcio,triton")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="our ORT intra-op threads per worker")
    ap.add_argument("--workers", type=int, default=1, help="our workers (device_concurrency)")
    ap.add_argument("--delay", default="0ms", help="our max_batch_delay")
    ap.add_argument("--triton-threads", type=int, default=2, help="ORT threads in Triton's model (anchors: 2)")
    ap.add_argument("--model-dir", default="/tmp/anchor/models")
    ap.add_argument("--anchor-python", default="/tmp/anchor/venv/bin/python")
    ap.add_argument("--outdir", default=None)
    a = ap.parse_args()
    models, servers = a.models.split(","), a.servers.split(",")
    missing = [m for m in models if not (Path(a.model_dir) / f"{m}.onnx").exists()]
    if missing or ("triton" in servers and not Path(a.anchor_python).exists()):
        raise SystemExit(f"anchor environment missing ({missing or a.anchor_python}); run: bash {S.ANCHORS}/setup_env.sh")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    a.outdir = a.outdir or str(HERE / "results" / f"serve-grpc-{stamp}")
    Path(a.outdir).mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {s: [] for s in servers}
    t_start = time.time()
    for rnd in range(a.rounds):
        for server in servers:
            for _ in range(60):
                if S.port_free(8000) and S.port_free(8001):
                    break
                time.sleep(1)
            proc = start(a, server, models, Path(a.outdir) / f"{server}-r{rnd}.log")
            try:
                S.wait_ready("http://127.0.0.1:8000", proc)
                wait_models("http://127.0.0.1:8000", models)
                time.sleep(2)
                for m in models:
                    for c in (int(x) for x in a.concurrency.split(",")):
                        row = point(a, server, f"{server}-r{rnd}-{m}-c{c}-{stamp}", m, c)
                        row["round"] = rnd
                        results[server].append(row)
                        print(f"round {rnd} {server:7s} {m:9s} c={c:3d} {row.get('infer_per_s', 0):9.1f} infer/s "
                              f"p99 {row.get('p99_ms', 0):7.2f} ms  server CPU {row.get('server_cpu_us_per_req', '-')} "
                              f"us/req  foreign {row.get('foreign_pct', '-')} %", flush=True)
            finally:
                rc = S.stop(proc)
                print(f"{server}: stopped, exit code {rc}", flush=True)
    minutes = (time.time() - t_start) / 60
    settings = (f"ours: threads={a.threads} workers={a.workers} max_batch_delay={a.delay}; triton: ORT threads="
                f"{a.triton_threads}, dynamic batcher max_batch 32, 1 ms delay; perf_analyzer gRPC, batch 1, "
                f"{a.interval_ms} ms windows x3; {a.rounds} round(s), medians; took {minutes:.1f} min")
    text = f"# gRPC serving benchmark {stamp} (UTC)\n\n{settings}\n\n{table(results, servers)}\n"
    (Path(a.outdir) / "summary.md").write_text(text)
    (Path(a.outdir) / "results.json").write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
