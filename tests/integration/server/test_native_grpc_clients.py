"""The native gRPC endpoint with real clients beyond the basics in test_triton_clients.py: tritonclient's asyncio
client (concurrent unary calls, bidirectional streaming), request compression, tensors larger than every
HTTP/2 default window and frame, many threads multiplexing streams, and perf_analyzer's streaming and async
modes. Run against both transports where the behaviour must match."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import threading
import time

import numpy as np
import pytest

tg = pytest.importorskip("tritonclient.grpc")
tga = pytest.importorskip("tritonclient.grpc.aio")


def mlp_input(x, module=tg):
    i = module.InferInput("input", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return i


def test_aio_client_concurrent_calls_and_streaming(grpc_server):
    srv = grpc_server
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1 + k % 5, 8)).astype(np.float32) for k in range(40)]

    async def main():
        c = tga.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
        try:
            assert await c.is_server_live() and await c.is_model_ready("mlp")
            assert (await c.get_model_metadata("mlp")).name == "mlp"
            results = await asyncio.gather(*[c.infer("mlp", [mlp_input(x, tga)], request_id=str(k))
                                             for k, x in enumerate(xs)])
            for k, (x, r) in enumerate(zip(xs, results)):
                assert r.get_response().id == str(k)
                np.testing.assert_allclose(r.as_numpy("output"), srv.mlp_ref(x), rtol=1e-5, atol=1e-5)

            async def requests():
                for k, x in enumerate(xs):
                    yield {"model_name": "mlp", "inputs": [mlp_input(x, tga)], "request_id": f"s{k}"}
                    if k % 7 == 0:
                        await asyncio.sleep(0.005)  # messages arrive spread over several reads

            got = []
            async for result, error in c.stream_infer(requests()):
                assert error is None, error
                got.append(result)
                if len(got) == len(xs):
                    break
            assert [r.get_response().id for r in got] == [f"s{k}" for k in range(len(xs))]
            for x, r in zip(xs, got):
                np.testing.assert_allclose(r.as_numpy("output"), srv.mlp_ref(x), rtol=1e-5, atol=1e-5)
        finally:
            await c.close()

    asyncio.run(main())


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(grpc_server, algorithm):
    c = tg.InferenceServerClient(f"127.0.0.1:{grpc_server.grpc_port}")
    x = np.linspace(-1, 1, 64 * 8, dtype=np.float32).reshape(64, 8)
    r = c.infer("mlp", [mlp_input(x)], compression_algorithm=algorithm)
    np.testing.assert_allclose(r.as_numpy("output"), grpc_server.mlp_ref(x), rtol=1e-5, atol=1e-5)


def test_large_tensors_cross_windows_and_frames(grpc_server):
    """160 KB in, 80 KB out: above HTTP/2's 64 KiB default windows and 16 KiB frames."""
    c = tg.InferenceServerClient(f"127.0.0.1:{grpc_server.grpc_port}")
    x = np.random.default_rng(5).standard_normal((5000, 8)).astype(np.float32)
    r = c.infer("mlp", [mlp_input(x)])
    np.testing.assert_allclose(r.as_numpy("output"), grpc_server.mlp_ref(x), rtol=1e-4, atol=1e-4)


def test_many_threads_share_the_connection(server):
    """tritonclient shares one channel (HTTP/2 connection) between clients: streams interleave on it."""
    errors = []

    def work(seed):
        try:
            c = tg.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
            rng = np.random.default_rng(seed)
            for _ in range(25):
                x = rng.standard_normal((2, 8)).astype(np.float32)
                np.testing.assert_allclose(c.infer("mlp", [mlp_input(x)]).as_numpy("output"), server.mlp_ref(x),
                                           rtol=1e-5, atol=1e-5)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]
    assert server.grpc.pending_answers() == 0


@pytest.mark.parametrize("mode", ["--streaming", "--async"])
def test_perf_analyzer_streaming_and_async(server, perf_analyzer, tmp_path, mode):
    out = tmp_path / "pa.csv"
    p = subprocess.run([perf_analyzer, "-m", "mlp", "-u", f"127.0.0.1:{server.grpc_port}", "-i", "grpc", mode,
                        "-b", "1", "--concurrency-range", "8:8", "--measurement-interval", "500", "-s", "100",
                        "--max-trials", "10", "--input-data", "zero", "-f", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    with out.open() as f:
        assert float(next(csv.DictReader(f))["Inferences/Second"]) > 0


def test_drain_under_grpc_load_loses_nothing(model_files):
    """request_stop() while 6 clients keep calling: every call is answered (OK, or UNAVAILABLE once draining),
    none is lost or cut off; the server drains cleanly."""
    from tritonclient.utils import InferenceServerException

    import xinfer_sdk as xs
    from xinfer_sdk.server.runner import Server

    model = xs.load(model_files["mlp"], profile="cpu", name="mlp", threads=1,
                    batching={"max_batch_delay": "1ms", "max_batch_size": 8})
    srv = Server([model], port=0, grpc_port=0, gpu_metrics=False, drain_timeout=10).start_background()
    ok, refused, other = [], [], []
    stop = threading.Event()

    def work():
        c = tg.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
        x = np.ones((1, 8), np.float32)
        while not stop.is_set():
            try:
                c.infer("mlp", [mlp_input(x)])
                ok.append(1)
            except InferenceServerException as exc:
                # draining: UNAVAILABLE ("shutting down", or no listener any more once it has stopped)
                (refused if "UNAVAILABLE" in str(exc.status()) else other).append(exc)
                return

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    while len(ok) < 200:
        threading.Event().wait(0.01)
    srv.request_stop()
    srv._thread.join(20)
    stop.set()
    for t in threads:
        t.join(20)
    assert not other, other[:3]
    assert srv.drained_cleanly is True and srv._exit_code == 0
    assert model.stats()["requests"]["success"] == len(ok)  # every answer the server gave reached its client
    # whether a call lands in the window between "intake stopped" (UNAVAILABLE "shutting down") and GOAWAY is
    # timing; either way it is refused with UNAVAILABLE, never lost (the 503/"shutting down" path itself is
    # checked deterministically in tests/unit/server/test_server_operations.py)
    assert all("UNAVAILABLE" in str(e.status()) for e in refused)


@pytest.mark.parametrize("impl", ["native", "grpcio"])
def test_serve_command_selects_the_grpc_transport(model_files, impl, cli_run):
    import os
    import signal
    import sys
    import time
    import urllib.request

    from live import free_ports

    port, gport = free_ports(2)
    p = subprocess.Popen([sys.executable, "-m", "xinfer_sdk", "serve", f"mlp={model_files['mlp']}", "--profile", "cpu",
                          "--port", str(port), "--grpc-port", str(gport), "--grpc-impl", impl],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    try:
        deadline = time.time() + 60
        while True:
            assert p.poll() is None and time.time() < deadline, "serve did not become ready"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        c = tg.InferenceServerClient(f"127.0.0.1:{gport}")
        x = np.ones((2, 8), np.float32)
        assert c.infer("mlp", [mlp_input(x)]).as_numpy("output").shape == (2, 4)
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err.decode()[-2000:]
    assert f"gRPC 127.0.0.1:{gport} ({impl})" in err.decode()
    code, _, err = cli_run("serve", str(model_files["mlp"]), "--grpc-impl", "h2")
    assert code == 2 and "--grpc-impl" in err


class CountingProxy:
    """A TCP forwarder that counts the connections a client opens (what the server-side age policy causes)."""

    def __init__(self, target_port: int):
        import socket

        self.target, self.connections = target_port, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(2)
                except OSError:
                    pass


@pytest.mark.parametrize("impl", ["native", "grpcio"])
def test_max_connection_age_moves_clients_to_a_fresh_connection(model_files, impl):
    """An aged connection gets a graceful GOAWAY: the client's next calls reconnect (re-resolving DNS, which is
    how a headless Service spreads long-lived gRPC clients over replicas the autoscaler added); none fails."""
    import xinfer_sdk as xs
    from xinfer_sdk.server.runner import Server

    model = xs.load(model_files["mlp"], profile="cpu", name="mlp", threads=1)
    srv = Server([model], port=0, grpc_port=0, gpu_metrics=False, drain_timeout=5, grpc_impl=impl,
                 grpc_max_connection_age=0.5).start_background()
    try:
        proxy = CountingProxy(srv.grpc_port)
        c = tg.InferenceServerClient(f"127.0.0.1:{proxy.port}")
        x = np.ones((1, 8), np.float32)
        for _ in range(8):  # 2 s of calls over a 0.5 s connection age
            c.infer("mlp", [mlp_input(x)])
            time.sleep(0.25)
        assert model.stats()["requests"]["success"] == 8
        assert proxy.connections >= 3, proxy.connections  # reconnected at least twice
    finally:
        srv.stop()


def test_without_max_connection_age_one_connection_serves_all(model_files):
    import xinfer_sdk as xs
    from xinfer_sdk.server.runner import Server

    model = xs.load(model_files["mlp"], profile="cpu", name="mlp", threads=1)
    srv = Server([model], port=0, grpc_port=0, gpu_metrics=False, drain_timeout=5).start_background()
    try:
        proxy = CountingProxy(srv.grpc_port)
        c = tg.InferenceServerClient(f"127.0.0.1:{proxy.port}")
        for _ in range(6):
            c.infer("mlp", [mlp_input(np.ones((1, 8), np.float32))])
            time.sleep(0.2)
        assert proxy.connections == 1
    finally:
        srv.stop()
