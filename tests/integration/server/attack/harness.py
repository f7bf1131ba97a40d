"""What every attack test needs: a real ``xinfer-sdk serve`` subprocess on loopback (so its RSS and fds are its own),
its resources, a normal client measuring latency while the attack runs, and the drain at the end.

    with served("--header-timeout", "1") as srv:          # srv.http_port, srv.grpc_port, srv.pid
        with Probe(srv) as probe:                          # normal HTTP (new connection each) + gRPC calls
            attack(srv)
        assert probe.max_ms() < 1000
        assert srv.rss_mib() < srv.rss0 + 64
    # leaving the block drains the server with SIGTERM and asserts exit 0
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
_READY = re.compile(r"ready: HTTP http://[^:]+:(\d+)(?:, gRPC [^:]+:(\d+))?")
BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}).encode()
INFER = (b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n"
         b"Content-Type: application/json\r\n\r\n" % len(BODY)) + BODY


def model_file(tmp: Path) -> Path:
    """The tiny MLP (8 -> 4) every attack server serves as 'mlp'."""
    sys.path.insert(0, str(ROOT / "tests"))
    from onnx_models import make_mlp_onnx

    path = tmp / "mlp.onnx"
    if not path.exists():
        make_mlp_onnx(path)
    return path


class Served:
    def __init__(self, proc: subprocess.Popen, http_port: int, grpc_port: int | None, log: Path):
        self.proc, self.pid = proc, proc.pid
        self.http_port, self.grpc_port = http_port, grpc_port
        self.log = log
        self.rss0 = self.rss_mib()

    def rss_mib(self) -> float:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (the drain) and the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def served(tmp: Path, *flags: str, grpc: bool = True, nofile: int | None = None, drain_ok: bool = True):
    """``xinfer-sdk serve mlp.onnx`` on free loopback ports with extra ``flags``; SIGTERM-drained on exit (exit 0
    asserted unless ``drain_ok`` is False). ``nofile`` lowers RLIMIT_NOFILE of the server process."""
    model = model_file(tmp)
    log = tmp / f"serve-{time.monotonic_ns()}.log"
    cmd = [sys.executable, "-m", "xinfer_sdk", "serve", f"mlp={model}", "--profile", "cpu", "--threads", "1",
           "--host", "127.0.0.1", "--port", "0", *(["--grpc-port", "0"] if grpc else ["--no-grpc"]), *flags]

    def limit() -> None:
        if nofile is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env, preexec_fn=limit)
    try:
        deadline = time.monotonic() + 60
        m = None
        while m is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
            m = _READY.search(log.read_text(errors="replace"))
        srv = Served(proc, int(m.group(1)), int(m.group(2)) if m.group(2) else None, log)
        yield srv
        code = srv.stop()
        if drain_ok:
            assert code == 0, f"the server did not drain cleanly (exit {code}): {srv.output()[-2000:]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def http_infer(port: int, timeout: float = 10.0) -> int:
    """One normal inference on a new connection; returns the HTTP status."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(INFER)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the answer")
            data += chunk
        return int(data.split(b" ", 2)[1])


class Probe:
    """A normal client in a thread: HTTP infer on a new connection (and gRPC ServerLive + ModelInfer through
    tritonclient when the server has gRPC) every ``every`` seconds; latencies in ms and failures."""

    def __init__(self, srv: Served, every: float = 0.1, grpc: bool = True):
        self.srv, self.every = srv, every
        self.grpc = grpc and srv.grpc_port is not None
        self.http_ms: list[float] = []
        self.grpc_ms: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = None
        if self.grpc:
            import numpy as np
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(f"127.0.0.1:{self.srv.grpc_port}")
            inp = grpcclient.InferInput("input", [1, 8], "FP32")
            inp.set_data_from_numpy(np.full((1, 8), 0.5, np.float32))
        while not self._stop.is_set():
            t = time.perf_counter()
            try:
                status = http_infer(self.srv.http_port)
                if status != 200:
                    self.failures.append(f"HTTP {status}")
            except OSError as exc:
                self.failures.append(f"HTTP {exc!r}")
            self.http_ms.append((time.perf_counter() - t) * 1e3)
            if client is not None:
                t = time.perf_counter()
                try:
                    client.infer("mlp", [inp], client_timeout=10)
                except Exception as exc:  # tritonclient raises its own InferenceServerException
                    self.failures.append(f"gRPC {exc}")
                self.grpc_ms.append((time.perf_counter() - t) * 1e3)
            self._stop.wait(self.every)
        if client is not None:
            client.close()

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def max_ms(self) -> float:
        return max(self.http_ms + self.grpc_ms, default=0.0)

    def summary(self) -> str:
        def s(v):
            v = sorted(v)
            return f"p50 {v[len(v) // 2]:.1f} / max {v[-1]:.1f} ms ({len(v)})" if v else "none"

        return f"HTTP {s(self.http_ms)}; gRPC {s(self.grpc_ms)}; failures {len(self.failures)} {self.failures[:3]}"
