"""The README's main job on the embedded default (`make demo`), end to end, on real data:

  1. detect this machine's hardware profile (here: cpu, ONNX Runtime)
  2. train a small classifier on scikit-learn's bundled digits (seconds, no download) and export it to ONNX
  3. build it for the detected profile: INT8 with calibration and the accuracy gate (FP32 vs INT8 on held-out data)
  4. inspect the bundle (manifest, checksums, accuracy report)
  5. load it embedded and measure its accuracy through the batching core
  6. serve it (KServe v2 on 127.0.0.1), load it with `xinfer-sdk bench`, send one request with curl, and shut
     the server down cleanly (SIGTERM: drain, exit 0)

    make demo        (or: python examples/demo.py [--workdir out/demo] [--skip-serve])
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def cli(*args: str) -> None:
    """Run the xinfer-sdk command in-process, exactly as a user types it."""
    from xinfer_sdk.cli import main

    print(f"$ xinfer-sdk {' '.join(args)}", flush=True)
    code = main(list(args))
    if code != 0:
        sys.exit(code)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not become ready in time")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_bench(bundle: Path, x: np.ndarray, port: int | None = None) -> None:
    port = port or free_port()
    grpc_port = free_port()
    url = f"http://127.0.0.1:{port}"
    step(f"7. serve the bundle on {url} (KServe v2 HTTP + gRPC), bench it, one curl, graceful shutdown")
    cmd = [sys.executable, "-m", "xinfer_sdk", "serve", str(bundle), "--port", str(port), "--grpc-port",
           str(grpc_port)]
    print("$ xinfer-sdk " + " ".join(cmd[3:]), flush=True)
    proc = subprocess.Popen(cmd)
    try:
        wait_ready(url, proc)
        cli("bench", "--url", url, "--model", bundle.stem, "--concurrency", "1,16", "--duration", "3s")
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, x.shape[1]],
                                       "data": x[0].tolist()}]})
        curl = shutil.which("curl")
        if curl:
            print(f"$ curl -s {url}/v2/models/{bundle.stem}/infer -d '{{\"inputs\": [...]}}'", flush=True)
            out = subprocess.run([curl, "-s", f"{url}/v2/models/{bundle.stem}/infer", "-d", body],
                                 capture_output=True, text=True, timeout=30)
            print(out.stdout[:400])
        else:  # no curl on this machine: the same request with urllib
            req = urllib.request.Request(f"{url}/v2/models/{bundle.stem}/infer", data=body.encode(), method="POST")
            with urllib.request.urlopen(req, timeout=30) as r:
                print(r.read().decode()[:400])
    finally:
        print("$ kill -TERM <server>   (readiness off, intake stops, accepted requests answered, exit 0)", flush=True)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        print(f"server exited with code {code}")
        if code != 0:
            sys.exit(code)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="out/demo")
    ap.add_argument("--skip-serve", action="store_true", help="stop after the embedded run")
    ap.add_argument("--port", type=int, default=int(os.environ.get("XINFER_DEMO_PORT", "0")) or None,
                    help="HTTP port for step 6 (default: a free one)")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)

    import xinfer_sdk as xs

    step("1. which hardware profile fits this machine")
    cli("profiles", "detect")
    profile = xs.detect().profile

    step("2. train a digits classifier (scikit-learn's bundled load_digits) and export it to ONNX")
    from examples.models import digits_mlp

    ex = digits_mlp(work)
    print(f"{ex.onnx}: FP32 accuracy on held-out digits = {ex.fp32_accuracy:.4f}")

    bundle = work / "digits.xinfer"
    step(f"3. build it for profile '{profile}' in INT8 (calibration + accuracy gate)")
    cli("build", str(ex.onnx), "--profile", profile, "--precision", "int8", "--calib", str(ex.calib),
        "--eval", str(ex.eval), "-o", str(bundle), "--name", "digits")

    step("4. the bundle: manifest, checksums, accuracy report")
    cli("inspect", str(bundle))

    step("5. load it embedded and classify the held-out digits through the batching core")
    data = np.load(ex.eval)
    x, y = data["input"], data["labels"]
    with xs.load(bundle, profile=profile) as model:
        futs = [model.submit({"input": x[i:i + 1]}) for i in range(len(x))]
        pred = np.concatenate([f.result()["logits"] for f in futs]).argmax(1)
        d, s = model.describe(), model.stats()
    print(f"backend {d['backend']} on {d['device']} ({d['why']})")
    print(f"INT8 accuracy through the runtime: {(pred == y).mean():.4f} on {len(y)} digits "
          f"(FP32 {ex.fp32_accuracy:.4f}); {s['batches']} batches, mean batch {s['mean_batch_size']:.1f}")

    step("6. plan 2000 req/s at p99 20 ms on this profile, then Kubernetes manifests + a Helm chart from the plan")
    plan = work / "plan.json"
    print(f"$ xinfer-sdk plan {bundle} -p {profile} --target-qps 2000 --p99 20ms --json > {plan}", flush=True)
    with open(plan, "w") as f:
        subprocess.run([sys.executable, "-m", "xinfer_sdk", "plan", str(bundle), "-p", profile, "--target-qps",
                        "2000", "--p99", "20ms", "--json"], stdout=f, check=True)
    cli("deploy", "k8s", str(bundle), "--profile", profile, "--image", "registry.example.com/xinfer:0.1.0",
        "--from-plan", str(plan), "--max-replicas", "4", "-o", str(work / "k8s"), "--force")

    if not args.skip_serve:
        serve_and_bench(bundle, x, args.port)


if __name__ == "__main__":
    main()
