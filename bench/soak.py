"""Soak of a real ``xinfer-sdk serve``: a million checked requests over HTTP and gRPC, resources sampled.

    python bench/soak.py [--requests 1000000] [--seconds N] [--json out.json]

Starts ``python -m xinfer_sdk serve`` as a subprocess on free ports with three tiny ONNX models made here (an MLP,
a wider MLP, a small CNN), then drives it from two client processes: raw HTTP/1.1 keep-alive with prebuilt
binary-tensor requests, and gRPC ``ModelInfer`` through ``grpc.aio`` with prebuilt protobuf bytes. Each request
picks a model, a batch size 1..8 and an input from a pool whose expected outputs onnxruntime computed in this
process; every 200 / OK is compared with them (bytes, else ``np.allclose`` rtol 1e-4 atol 1e-5). About 2 % of
requests are cancelled (HTTP: the connection is closed right after or in the middle of sending; gRPC: the call is
cancelled) and about 2 % carry a tiny deadline (HTTP: Triton's ``timeout`` parameter; gRPC: the call's deadline).

Every ``--sample`` seconds the server's RSS, open fds and threads are read from /proc. After a warm-up (the first
10 % of requests) the report gives first/last/min/max and a least-squares slope per 100k requests; resources are
"flat" when RSS grows by at most max(16 MiB, 5 %), open fds come back to their pre-load baseline +-5 once the
clients are gone, and the thread count does not change. The exit code is 1 when any answer is wrong, any error is
unexpected, the server does not drain cleanly or a resource is not flat.

The server may close a keep-alive connection that stayed idle; the HTTP client reconnects, and a request sent on
a connection idle for more than a second that gets no byte back is retried once on a new one (``idle_retries``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MAX_B = 8  # request batch sizes 1..MAX_B
POOL_K = 6  # distinct inputs per (model, batch size)
CANCEL_P, DEADLINE_P = 0.02, 0.02
IDLE_S = 1.0  # a connection unused this long may have been idle-closed by the server under our feet


# -- models and the input pool -------------------------------------------------------------------------------
def make_models(d: Path) -> dict[str, tuple[Path, str, str, tuple[int, ...]]]:
    """Three tiny ONNX models: name -> (path, input name, output name, per-sample input shape)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)

    def init(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    def save(name, nodes, inits, in_dims, out_dims):
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", *in_dims])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", *out_dims])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        onnx.checker.check_model(model)
        onnx.save(model, str(d / f"{name}.onnx"))
        return d / f"{name}.onnx", "x", "y", tuple(in_dims)

    def mlp(name, n_in, hidden, n_out):
        nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
                 helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"])]
        return save(name, nodes, [init("w1", n_in, hidden), init("b1", hidden), init("w2", hidden, n_out)],
                    [n_in], [n_out])

    cnn_nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"], axis=1),
                 helper.make_node("MatMul", ["f", "w"], ["y"])]
    return {"mlp": mlp("mlp", 8, 16, 4), "wide": mlp("wide", 64, 128, 10),
            "cnn": save("cnn", cnn_nodes, [init("cw", 4, 1, 3, 3), init("cb", 4), init("w", 256, 10)], [1, 8, 8], [10])}


def _http_request(model: str, inp: str, out: str, x: np.ndarray, timeout_us: int = 0) -> bytes:
    params = f',"parameters":{{"timeout":{timeout_us}}}' if timeout_us else ""
    head = (f'{{"inputs":[{{"name":"{inp}","datatype":"FP32","shape":{list(x.shape)},'
            f'"parameters":{{"binary_data_size":{x.nbytes}}}}}],'
            f'"outputs":[{{"name":"{out}","parameters":{{"binary_data":true}}}}]{params}}}').encode()
    return (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            f"Inference-Header-Content-Length: {len(head)}\r\nContent-Length: {len(head) + x.nbytes}\r\n\r\n"
            ).encode() + head + x.tobytes()


def build_pool(models: dict, seed: int = 0) -> list[dict]:
    """Requests with their expected answers, computed by onnxruntime here: one entry per (model, batch, k)."""
    import onnxruntime as ort

    from xinfer_sdk.server._proto import grpc_service_pb2 as pb

    rng = np.random.default_rng(seed)
    pool = []
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    for name, (path, inp, out, dims) in models.items():
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for b in range(1, MAX_B + 1):
            for _ in range(POOL_K):
                x = rng.standard_normal((b, *dims)).astype(np.float32)
                y = sess.run([out], {inp: x})[0]
                g = pb.ModelInferRequest(model_name=name, inputs=[pb.ModelInferRequest.InferInputTensor(
                    name=inp, datatype="FP32", shape=list(x.shape))], raw_input_contents=[x.tobytes()])
                head = (f'{{"model_name":"{name}","model_version":"1","outputs":[{{"name":"{out}","datatype":"FP32",'
                        f'"shape":[{",".join(map(str, y.shape))}],"parameters":{{"binary_data_size":{y.nbytes}}}}}]}}')
                pool.append({"model": name, "out": out, "y": y, "y_bytes": y.tobytes(), "http_head": head.encode(),
                             "http": _http_request(name, inp, out, x),
                             "http_deadline": _http_request(name, inp, out, x, int(rng.choice([1, 20, 100, 500]))),
                             "grpc": g.SerializeToString()})
    return pool


def _close(e: dict, data: bytes, dtype: str, shape: list) -> bool:
    y = e["y"]
    if dtype != "FP32" or list(shape) != list(y.shape) or len(data) != y.nbytes:
        return False
    return bool(np.allclose(np.frombuffer(data, np.float32).reshape(y.shape), y, rtol=1e-4, atol=1e-5))


def check_http(e: dict, body: bytes, hlen: int | None) -> str:
    """'ok' (identical bytes), 'ok_close' (allclose) or 'wrong: <why>'."""
    if hlen is None:
        return f"wrong: JSON answer, binary output asked: {body[:200]!r}"
    head, data = body[:hlen], body[hlen:]
    if head == e["http_head"] and data == e["y_bytes"]:
        return "ok"
    try:
        outs = json.loads(head)["outputs"]
        o = next(o for o in outs if o["name"] == e["out"])
        ok = len(outs) == 1 and _close(e, data, o["datatype"], o["shape"])
    except (ValueError, KeyError, TypeError, StopIteration) as exc:
        return f"wrong: bad answer header {head[:200]!r} ({exc})"
    return "ok_close" if ok else f"wrong: output differs (header {head[:160]!r})"


def check_grpc(e: dict, resp) -> str:
    if len(resp.raw_output_contents) != 1 or len(resp.outputs) != 1 or resp.outputs[0].name != e["out"]:
        return f"wrong: outputs {[o.name for o in resp.outputs]}, {len(resp.raw_output_contents)} raw contents"
    o, data = resp.outputs[0], resp.raw_output_contents[0]
    if data == e["y_bytes"] and list(o.shape) == list(e["y"].shape) and o.datatype == "FP32":
        return "ok"
    return "ok_close" if _close(e, data, o.datatype, o.shape) else f"wrong: output differs ({o.datatype} {list(o.shape)})"


# -- clients (one process each) ----------------------------------------------------------------------------------
class _Budget:
    """Requests this process may still start, a shared progress slot and the counters it reports."""

    def __init__(self, quota: int, stop_at: float | None, progress, slot: int):
        self.left, self.stop_at, self.progress, self.slot = quota, stop_at, progress, slot
        self.counts: dict[str, int] = {}
        self.samples: list[str] = []  # the first few unexpected errors / wrong answers, verbatim

    def take(self) -> bool:
        if self.left <= 0 or (self.stop_at is not None and time.time() >= self.stop_at):
            return False
        self.left -= 1
        return True

    def count(self, what: str, detail: str = "") -> None:
        key = what.split(":", 1)[0]
        self.counts[key] = self.counts.get(key, 0) + 1
        if key in ("wrong", "unexpected") and len(self.samples) < 20:
            self.samples.append(f"{what} {detail}".strip())
        if key != "idle_retry" and key != "reconnect":
            self.progress[self.slot] += 1


class _HttpConn(asyncio.Protocol):
    def __init__(self):
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.transport = None
        self.closed = False
        self.got = 0  # bytes received for the outstanding request
        self.last = time.monotonic()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        self.got += len(data)
        w = self.waiter
        if w is None or w.done():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        m = re.search(rb"\r\ncontent-length: *(\d+)", head)
        n = int(m.group(1)) if m else 0
        if len(self.buf) < end + 4 + n:
            return
        body = bytes(self.buf[end + 4:end + 4 + n])
        del self.buf[:end + 4 + n]
        w.set_result((head, body))

    def connection_lost(self, exc):
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed ({exc or 'EOF'}), {self.got} bytes back"))


async def _http_loop(port: int, pool: list, bud: _Budget, rng: random.Random,
                     pause: tuple[float, float] | None = None, stop: asyncio.Event | None = None) -> None:
    """One keep-alive connection, one request outstanding. ``pause``: stay idle that many seconds (uniform in the
    range) before each request, e.g. long enough for the server's keep-alive timeout, until ``stop`` is set."""
    loop = asyncio.get_running_loop()
    conn: _HttpConn | None = None
    stop = stop or asyncio.Event()
    while True:
        if pause is not None:
            try:
                await asyncio.wait_for(stop.wait(), rng.uniform(*pause))
                break
            except asyncio.TimeoutError:
                pass
        if not bud.take():
            break
        e = rng.choice(pool)
        r = rng.random()
        if r < CANCEL_P:  # cancelled: a fresh connection, closed right after (or in the middle of) the request
            t, _ = await loop.create_connection(_HttpConn, "127.0.0.1", port)
            t.write(e["http"] if r < CANCEL_P / 2 else e["http"][:len(e["http"]) // 2])
            await asyncio.sleep(0)
            t.abort() if rng.random() < 0.5 else t.close()
            bud.count("cancelled")
            continue
        deadline = r < CANCEL_P + DEADLINE_P
        for attempt in (0, 1):
            if conn is None or conn.closed:
                if conn is not None:
                    bud.count("reconnect")
                _, conn = await loop.create_connection(_HttpConn, "127.0.0.1", port)
            idle = time.monotonic() - conn.last
            conn.waiter, conn.got = loop.create_future(), 0
            timer = loop.call_later(60, conn.waiter.cancel)
            conn.transport.write(e["http_deadline" if deadline else "http"])
            try:
                head, body = await conn.waiter
            except ConnectionError as exc:
                if attempt == 0 and conn.got == 0 and idle >= IDLE_S:
                    bud.count("idle_retry")
                    continue
                bud.count("unexpected:http lost", f"{exc} (idle {idle:.1f} s before the send)")
                break
            except asyncio.CancelledError:
                bud.count("unexpected:http no answer in 60 s")
                conn.transport.abort()
                break
            finally:
                timer.cancel()
                conn.last = time.monotonic()
            status = int(head[9:12])
            if b"\r\nconnection: close" in head:
                conn.transport.close()
                conn.closed = True
            if status == 200:
                m = re.search(rb"\r\ninference-header-content-length: *(\d+)", head)
                res = check_http(e, body, int(m.group(1)) if m else None)
                bud.count(res, f"http {e['model']} {e['y'].shape}")
            elif status == 504 and deadline:
                bud.count("deadline")
            else:
                bud.count(f"unexpected:http {status}", body[:200].decode("latin-1"))
            break
    if conn is not None and not conn.closed:
        conn.transport.close()


async def _grpc_loop(method, pool: list, bud: _Budget, rng: random.Random) -> None:
    import grpc

    while bud.take():
        e = rng.choice(pool)
        r = rng.random()
        deadline = CANCEL_P <= r < CANCEL_P + DEADLINE_P
        call = method(e["grpc"], timeout=rng.uniform(0.0002, 0.003) if deadline else 60)
        if r < CANCEL_P:
            if rng.random() < 0.5:
                await asyncio.sleep(0)
            call.cancel()
        try:
            resp = await call
        except asyncio.CancelledError:
            if r >= CANCEL_P:
                raise
            bud.count("cancelled")
            continue
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if (code == grpc.StatusCode.DEADLINE_EXCEEDED and deadline) or (
                    code == grpc.StatusCode.CANCELLED and r < CANCEL_P):
                bud.count("deadline" if deadline else "cancelled")
            else:
                bud.count(f"unexpected:grpc {code.name}", str(exc.details())[:200])
            continue
        bud.count(check_grpc(e, resp), f"grpc {e['model']} {e['y'].shape}")


def client_main(kind: str, port: int, pool: list, quota: int, conc: int, stop_at: float | None, progress, slot: int,
                results, seed: int) -> None:
    """One client process: ``conc`` HTTP connections or gRPC calls in flight until its quota is spent."""
    bud = _Budget(quota, stop_at, progress, slot)
    rng = random.Random(seed)

    async def main():
        if kind == "http":
            stop = asyncio.Event()
            sleepy = asyncio.ensure_future(_http_loop(port, pool, bud, random.Random(rng.random()), (0, 40), stop))
            await asyncio.gather(*(_http_loop(port, pool, bud, random.Random(rng.random())) for _ in range(conc)))
            stop.set()
            await sleepy
            return
        import grpc

        from xinfer_sdk.server._proto import grpc_service_pb2 as pb
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(2)]
        methods = [c.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                 response_deserializer=pb.ModelInferResponse.FromString) for c in channels]
        await asyncio.gather(*(_grpc_loop(methods[i % 2], pool, bud, random.Random(rng.random()))
                               for i in range(conc)))
        for c in channels:
            await c.close()

    try:
        if kind == "http":
            try:
                import uvloop
                uvloop.install()
            except ImportError:
                pass
        asyncio.run(main())
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the soak with it
        bud.count("unexpected:client crashed", repr(exc))
    results.put((kind, bud.counts, bud.samples))


# -- the server, its resources, the run ----------------------------------------------------------------------------
class ServerFailed(RuntimeError):
    """The server did not start (its command and the end of its log are in the message)."""


def start_server(models: dict, workdir: Path, timeout: float = 120.0, tree: Path = ROOT
                 ) -> tuple[subprocess.Popen, int, int, Path]:
    """``python -m xinfer_sdk serve --config ...`` on free ports, its package imported from ``tree``; returns
    (process, http port, grpc port, log)."""
    cfg = workdir / "config.yaml"
    cfg.write_text("defaults:\n  profile: cpu\n  device: cpu\n  threads: 1\n"
                   "  batch: {max_batch_size: 32, max_batch_delay: 0ms}\nmodels:\n"
                   + "".join(f"  - {{name: {n}, path: {v[0]}}}\n" for n, v in models.items()))
    log = workdir / "server.log"
    cmd = [sys.executable, "-m", "xinfer_sdk", "serve", "--config", str(cfg), "--port", "0", "--grpc-port", "0"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=workdir,
                                env={**os.environ, "PYTHONPATH": str(tree)})
    end = time.time() + timeout
    while time.time() < end:
        m = re.search(r"ready: HTTP http://[\d.]+:(\d+), gRPC [\d.]+:(\d+)", log.read_text(errors="replace"))
        if m:
            return proc, int(m.group(1)), int(m.group(2)), log
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise ServerFailed(f"the server did not become ready: {' '.join(cmd)}\n{log.read_text(errors='replace')[-2000:]}")


def resources(pid: int) -> dict:
    """RSS (MiB), open fds and threads of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    return {"rss_mib": round(rss, 2), "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": threads}


def _series(steady: list[dict], key: str) -> dict:
    v = [s[key] for s in steady]
    n = [s["done"] for s in steady]
    slope = float(np.polyfit(n, v, 1)[0]) * 1e5 if len(set(n)) > 1 else 0.0
    return {"first": v[0], "last": v[-1], "min": min(v), "max": max(v), "slope_per_100k": round(slope, 3)}


def analyse(samples: list[dict], baseline: dict, final: dict, *, warmup: float = 0.1, rss_bound_mib: float = 16,
            rss_bound_pct: float = 5, fd_slack: int = 5) -> dict:
    """Resource verdicts over the steady phase (samples after the first ``warmup`` fraction of requests)."""
    total = samples[-1]["done"] if samples else 0
    steady = [s for s in samples if s["done"] >= warmup * total] or samples[-2:]
    if len(steady) < 2:
        steady = samples[-2:]
    res = {k: _series(steady, k) for k in ("rss_mib", "fds", "threads")}
    rss = res["rss_mib"]
    bound = max(rss_bound_mib, rss["first"] * rss_bound_pct / 100)
    growth = max(rss["last"] - rss["first"], rss["slope_per_100k"] * (steady[-1]["done"] - steady[0]["done"]) / 1e5)
    rss.update(bound=round(bound, 2), growth=round(growth, 2), flat=bool(growth <= bound))
    res["fds"].update(baseline=baseline["fds"], final=final["fds"], slack=fd_slack,
                      flat=bool(abs(final["fds"] - baseline["fds"]) <= fd_slack))
    th = res["threads"]
    th.update(baseline=baseline["threads"], final=final["threads"],
              flat=bool(th["min"] == th["max"] == final["threads"]))
    res["rss_mib"]["baseline"], res["rss_mib"]["final"] = baseline["rss_mib"], final["rss_mib"]
    res["steady_from_request"] = steady[0]["done"]
    return res


def run_soak(requests: int = 1_000_000, seconds: float | None = None, *, http_conns: int = 16, grpc_calls: int = 16,
             sample_s: float = 2.0, warmup: float = 0.1, rss_bound_mib: float = 16, rss_bound_pct: float = 5,
             fd_slack: int = 5, stall_s: float = 90, seed: int = 0, server_tree: Path = ROOT, log=print) -> dict:
    """Start the server, run the clients to ``requests`` (or ``seconds``), sample, drain; the report (a dict)."""
    with tempfile.TemporaryDirectory(prefix="xinfer-soak-") as tmp:
        models = make_models(Path(tmp))
        proc, port, gport, server_log = start_server(models, Path(tmp), tree=Path(server_tree))
        try:
            return _drive(proc, port, gport, server_log, build_pool(models, seed), requests, seconds, http_conns,
                          grpc_calls, sample_s, stall_s, seed, log,
                          dict(warmup=warmup, rss_bound_mib=rss_bound_mib, rss_bound_pct=rss_bound_pct,
                               fd_slack=fd_slack))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _drive(proc, port, gport, server_log, pool, requests, seconds, http_conns, grpc_calls, sample_s, stall_s, seed,
           log, bounds) -> dict:
    time.sleep(0.5)
    baseline = resources(proc.pid)
    ctx = mp.get_context("spawn")
    progress, results = ctx.RawArray("q", 2), ctx.Queue()
    stop_at = time.time() + seconds if seconds else None
    quotas = {"http": requests // 2, "grpc": requests - requests // 2}
    clients = [ctx.Process(target=client_main, args=(kind, port if kind == "http" else gport, pool, quotas[kind],
                                                    http_conns if kind == "http" else grpc_calls, stop_at, progress,
                                                    i, results, seed + i), daemon=True)
               for i, kind in enumerate(("http", "grpc"))]
    t0 = time.time()
    for c in clients:
        c.start()
    samples: list[dict] = []
    problems: list[str] = []
    last_done, last_change, last_log = 0, t0, t0
    while any(c.is_alive() for c in clients):
        time.sleep(sample_s)
        if proc.poll() is not None:
            problems.append(f"the server exited ({proc.returncode}) during the soak")
            break
        done = sum(progress)
        now = time.time()
        samples.append({"t": round(now - t0, 2), "done": done, **resources(proc.pid)})
        if done != last_done:
            last_done, last_change = done, now
        elif now - last_change > stall_s:
            problems.append(f"no request finished for {stall_s:.0f} s at {done} requests (stalled)")
            break
        if now - last_log >= 10:
            last_log = now
            s = samples[-1]
            log(f"  {done:>9,} requests  {done / (now - t0):7.0f}/s  rss {s['rss_mib']:.1f} MiB  fds {s['fds']}  "
                f"threads {s['threads']}")
    elapsed = time.time() - t0
    for c in clients:
        if c.is_alive():
            c.terminate()
    counts: dict[str, dict] = {}
    errors: list[str] = []
    for _ in clients:
        try:
            kind, n, sample = results.get(timeout=30)
        except Exception:  # noqa: BLE001 - queue.Empty: a client died without reporting
            problems.append("a client process ended without reporting its counts")
            continue
        counts[kind] = n
        errors += [f"{kind}: {s}" for s in sample]
    for c in clients:
        c.join(10)
    end = time.time() + 15  # let the server close the clients' sockets before the final reading
    while time.time() < end and resources(proc.pid)["fds"] > baseline["fds"] + bounds["fd_slack"]:
        time.sleep(0.25)
    time.sleep(1)
    final = resources(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        exit_code = proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        exit_code = proc.wait()
        problems.append("the server did not stop within 60 s of SIGTERM")
    text = server_log.read_text(errors="replace")
    if "Traceback" in text:
        problems.append(f"the server logged {text.count('Traceback')} traceback(s); first: "
                        + text[text.index("Traceback"):][:1500])
    if exit_code != 0:
        problems.append(f"the server's exit code after SIGTERM was {exit_code}, not 0 (clean drain)")
    total = {}
    for n in counts.values():
        for k, v in n.items():
            total[k] = total.get(k, 0) + v
    for k in ("ok", "ok_close", "wrong", "cancelled", "deadline", "unexpected", "reconnect", "idle_retry"):
        total.setdefault(k, 0)
    done = sum(v for k, v in total.items() if k not in ("reconnect", "idle_retry"))
    res = analyse(samples, baseline, final, **bounds) if len(samples) >= 2 else None
    if res is None:
        problems.append("fewer than 2 resource samples: run longer or sample more often")
    flat = bool(res and res["rss_mib"]["flat"] and res["fds"]["flat"] and res["threads"]["flat"])
    passed = (total["wrong"] == 0 and total["unexpected"] == 0 and total["ok"] + total["ok_close"] > 0
              and flat and not problems)
    return {"passed": passed, "requests": done, "seconds": round(elapsed, 1), "rate": round(done / elapsed, 1),
            "counts": total, "by_protocol": counts, "errors": errors, "problems": problems, "resources": res,
            "server_exit": exit_code, "models": sorted({e["model"] for e in pool}), "samples": samples,
            "concurrency": {"http": http_conns, "grpc": grpc_calls}}


def table(rep: dict) -> str:
    c = rep["counts"]
    lines = [f"soak: {rep['requests']:,} requests in {rep['seconds']} s ({rep['rate']:,.0f}/s), models "
             f"{', '.join(rep['models'])}, HTTP {rep['concurrency']['http']} conns + gRPC {rep['concurrency']['grpc']} "
             "calls",
             f"  ok {c['ok']:,} (+{c['ok_close']:,} allclose)  wrong {c['wrong']}  cancelled {c['cancelled']:,}  "
             f"deadline {c['deadline']:,}  unexpected {c['unexpected']}  reconnects {c['reconnect']:,}  "
             f"idle retries {c['idle_retry']}"]
    for kind, n in rep["by_protocol"].items():
        lines.append(f"  {kind:<5} " + "  ".join(f"{k} {v:,}" for k, v in sorted(n.items())))
    r = rep["resources"]
    if r:
        lines.append(f"  {'resource':<8} {'base':>8} {'first':>8} {'last':>8} {'min':>8} {'max':>8} {'final':>8} "
                     f"{'/100k':>8}  verdict (steady from request {r['steady_from_request']:,})")
        for k, why in (("rss_mib", f"growth {r['rss_mib']['growth']} <= {r['rss_mib']['bound']} MiB"),
                       ("fds", f"final within baseline +-{r['fds']['slack']}"), ("threads", "constant")):
            s = r[k]
            lines.append(f"  {k:<8} {s['baseline']:>8} {s['first']:>8} {s['last']:>8} {s['min']:>8} {s['max']:>8} "
                         f"{s['final']:>8} {s['slope_per_100k']:>8}  {'flat' if s['flat'] else 'NOT FLAT'}: {why}")
    lines += [f"  server exit {rep['server_exit']}"] + [f"  problem: {p}" for p in rep["problems"]]
    lines += [f"  error: {e}" for e in rep["errors"][:10]]
    lines.append("PASSED" if rep["passed"] else "FAILED")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=1_000_000, help="checked requests in all (default 1,000,000)")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this long even if requests are left")
    ap.add_argument("--http-conns", type=int, default=16, help="keep-alive HTTP connections (default 16)")
    ap.add_argument("--grpc-calls", type=int, default=16, help="gRPC calls in flight (default 16)")
    ap.add_argument("--sample", type=float, default=2.0, help="seconds between resource samples (default 2)")
    ap.add_argument("--server-tree", default=str(ROOT),
                    help="import the server's xinfer_sdk from this checkout (default: this one), e.g. a\n"
                         "'git archive <commit> xinfer_sdk | tar -x -C DIR' snapshot")
    ap.add_argument("--json", default=None, help="write the full report (with every sample) here")
    a = ap.parse_args(argv)
    try:
        rep = run_soak(a.requests, a.seconds, http_conns=a.http_conns, grpc_calls=a.grpc_calls, sample_s=a.sample,
                       server_tree=Path(a.server_tree))
    except ServerFailed as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    print(table(rep))
    if a.json:
        Path(a.json).write_text(json.dumps(rep, indent=1))
    return 0 if rep["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
