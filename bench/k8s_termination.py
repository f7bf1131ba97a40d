"""What a pod termination costs in failed requests: the generated preStop + drain vs SIGTERM at once.

Kubernetes removes a terminating pod from the Service's endpoints asynchronously: for a while (the
"propagation lag": endpoints controller, then kube-proxy / the ingress on every node) new connections still
reach it. This benchmark replays that on one machine, in ONE run, for both shutdown sequences:

  generated   what `xinfer-sdk deploy k8s` writes: preStop sleeps --prestop-delay while the pod keeps serving,
              then SIGTERM starts the drain (readiness 503, intake stops, accepted requests answered)
  immediate   SIGTERM when termination begins (no preStop): the common default, Triton's included

Clients open a new connection per request (as traffic routed by kube-proxy does) at a steady rate. At t0
termination begins; clients keep sending to this pod for --lag seconds (the propagation lag), then stop, as
they would once the endpoint is gone. Counted: answered 200, refused / reset, answered 503, and whether the
process exited 0 within terminationGracePeriodSeconds.

    python bench/k8s_termination.py [--lag 2] [--rate 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}).encode()
REQ = (b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
       % len(BODY)) + BODY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pod_config(work: Path, bundle: Path, port: int, prestop: str, drain: str) -> tuple[Path, dict]:
    """The server config and the termination settings exactly as the generated Deployment has them."""
    import yaml

    from xinfer_sdk.deploy import render, resolve_spec

    spec = resolve_spec(str(bundle), profile="cpu", image="bench/xinfer:0", cpu=1, prestop_delay=prestop,
                        drain_timeout=drain)
    objs = {o["kind"]: o for _, o in render(spec).manifests()}
    cfg = yaml.safe_load(objs["ConfigMap"]["data"]["config.yaml"])
    cfg["server"].update(host="127.0.0.1", port=port, grpc_port=None, metrics_port=None)
    cfg["models"][0]["path"] = str(bundle)
    path = work / f"config-{port}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    return path, {"grace": pod["terminationGracePeriodSeconds"],
                  "prestop": float(pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])}


async def one(port: int, stats: dict) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        stats["refused"] += 1
        return
    try:
        writer.write(REQ)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        code = int(head.split(b" ", 2)[1])
        stats["ok" if code == 200 else str(code)] = stats.get("ok" if code == 200 else str(code), 0) + 1
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
        stats["reset"] += 1
    finally:
        writer.close()


async def traffic(port: int, rate: float, until: float, stats: dict) -> None:
    tasks = []
    gap = 1.0 / rate
    nxt = time.perf_counter()
    while time.perf_counter() < until:
        tasks.append(asyncio.ensure_future(one(port, stats)))
        nxt += gap
        await asyncio.sleep(max(0.0, nxt - time.perf_counter()))
    await asyncio.gather(*tasks)


def run_case(mode: str, bundle: Path, work: Path, lag: float, rate: float) -> dict:
    port = free_port()
    conf, term = pod_config(work, bundle, port, prestop=f"{max(lag + 1, 3):g}s", drain="10s")
    p = subprocess.Popen([sys.executable, "-m", "xinfer_sdk", "serve", "--config", str(conf)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                break
        except OSError:
            if time.time() > deadline or p.poll() is not None:
                raise SystemExit(f"server did not start: {p.stderr.read().decode()[-1000:]}") from None
            time.sleep(0.2)
    stats = {"refused": 0, "reset": 0}
    exited: dict[str, float] = {}

    async def main() -> float:
        warm = time.perf_counter() + 1.0
        await traffic(port, rate, warm, {"refused": 0, "reset": 0})
        t0 = time.perf_counter()
        load = asyncio.ensure_future(traffic(port, rate, t0 + lag, stats))  # routed here until endpoints drop

        async def kubelet() -> None:
            if mode == "generated":
                await asyncio.sleep(term["prestop"])  # preStop: keep serving while endpoints drop the pod
            p.send_signal(signal.SIGTERM)
            while p.poll() is None and time.perf_counter() < t0 + term["grace"]:
                await asyncio.sleep(0.01)
            exited["at"] = time.perf_counter()

        await asyncio.gather(load, kubelet())
        return t0

    t0 = asyncio.run(main())
    code = p.wait(term["grace"] + 5)  # past the grace period the kubelet would have sent SIGKILL
    return {**stats, "exit": code, "seconds_to_exit": round(exited["at"] - t0, 2), "grace": term["grace"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lag", type=float, default=2.0, help="endpoint propagation lag, seconds (default 2)")
    ap.add_argument("--rate", type=float, default=200.0, help="new connections per second to this pod")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from onnx_models import make_mlp_onnx

    from xinfer_sdk.builder import build

    results: dict[str, list[dict]] = {"generated": [], "immediate": []}
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        make_mlp_onnx(work / "mlp.onnx")
        bundle = build(str(work / "mlp.onnx"), profile="cpu", output=str(work / "mlp.xinfer"), name="mlp").root
        for r in range(args.rounds):  # interleaved: the machine is shared and noisy
            for mode in ("generated", "immediate"):
                res = run_case(mode, bundle, work, args.lag, args.rate)
                results[mode].append(res)
                print(f"round {r + 1} {mode:9s}: {res}", flush=True)
    print(f"\npropagation lag {args.lag:g}s at {args.rate:g} new connections/s, {args.rounds} rounds:")
    for mode, rows in results.items():
        sent = sum(sum(v for k, v in row.items() if k not in ("exit", "seconds_to_exit", "grace")) for row in rows)
        failed = sum(sum(v for k, v in row.items() if k not in ("ok", "exit", "seconds_to_exit", "grace"))
                     for row in rows)
        exits = sorted({row["exit"] for row in rows})
        worst = max(row["seconds_to_exit"] for row in rows)
        print(f"  {mode:9s}: {failed} of {sent} requests failed ({100 * failed / max(1, sent):.1f} %), exit codes "
              f"{exits}, slowest exit {worst:.1f}s after termination began (grace {rows[0]['grace']}s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
