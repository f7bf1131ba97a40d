"""SIGTERM under load, 20 times: no client sees a connection reset, and every request that reached the server is
answered (200, or 503 / UNAVAILABLE once the drain began).

Each run starts a real ``xinfer-sdk serve`` process and puts four kinds of client on it at once, each in its own
threads, each looping until the server is gone (connect refused):
  * HTTP, a new connection per request (``Connection: close``), as a new user's client library does;
  * HTTP keep-alive, reconnecting after an answer with ``Connection: close``;
  * gRPC (raw HTTP/2 frames, tests/unit/server/h2_raw.py), a new connection per call;
  * gRPC, one connection for many calls, reconnecting after GOAWAY.
An outcome is "answered" (a full HTTP response; gRPC trailers), "not processed" (gRPC: a stream above GOAWAY's last
stream id or REFUSED_STREAM, which a client retries safely), "refused" (connect refused: nothing was sent) or a
failure (a reset, or a connection closed with a request unanswered). Failures must be 0 in every run.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("httptools")

sys.path.insert(0, str(Path(__file__).resolve().parent / "attack"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "server"))
from h2_raw import RawH2  # noqa: E402
from harness import BODY, served  # noqa: E402

pytestmark = pytest.mark.slow

RUNS = 20
LOAD_S = 0.4  # load before SIGTERM
HTTP_KEEP = (b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
             b"Content-Type: application/json\r\n\r\n" % len(BODY)) + BODY
HTTP_CLOSE = HTTP_KEEP.replace(b"Host: t\r\n", b"Host: t\r\nConnection: close\r\n")


def _grpc_request() -> bytes:
    from xinfer_sdk.server._proto import grpc_service_pb2 as pb

    req = pb.ModelInferRequest(model_name="mlp")
    t = req.inputs.add(name="input", datatype="FP32", shape=[1, 8])
    t.contents.fp32_contents.extend([0.5] * 8)
    return req.SerializeToString()


GRPC_BODY = _grpc_request()


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []

    def add(self, what: str, failure: str | None = None) -> None:
        with self.lock:
            self.counts[what] += 1
            if failure is not None:
                self.failures.append(failure)


def _connect(port: int) -> socket.socket | None:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
    except ConnectionRefusedError:
        return None
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_http(s: socket.socket, buf: bytes) -> tuple[int, bool, bytes]:
    """One response: (status, the server closes after it, bytes left over). Raises on reset/EOF before the end."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("EOF before the response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])}
    n = int(headers.get(b"content-length", b"0"))
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("EOF inside the response body")
        rest += chunk
    return status, headers.get(b"connection", b"").lower() == b"close", rest[n:]


def http_client(port: int, keep_alive: bool, tally: Tally, stop: threading.Event) -> None:
    while not stop.is_set():
        s = _connect(port)
        if s is None:
            tally.add("refused")
            return
        buf = b""
        try:
            with s:
                while not stop.is_set():
                    s.sendall(HTTP_KEEP if keep_alive else HTTP_CLOSE)
                    try:
                        status, close, buf = _read_http(s, buf)
                    except (ConnectionError, OSError) as exc:
                        tally.add("failure", f"HTTP {'keep-alive' if keep_alive else 'new-conn'}: {exc!r}")
                        break
                    tally.add(str(status))
                    if close or not keep_alive:
                        break
        except OSError as exc:  # a reset while sending
            tally.add("failure", f"HTTP send: {exc!r}")


def grpc_client(port: int, calls_per_conn: int, tally: Tally, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            c = RawH2(port)
        except ConnectionRefusedError:
            tally.add("refused")
            return
        except OSError as exc:
            tally.add("failure", f"gRPC connect: {exc!r}")
            return
        try:
            sid = 1
            for _ in range(calls_per_conn):
                if c.goaway is not None or stop.is_set():
                    break
                c.call(sid, "ModelInfer", GRPC_BODY)
                while not (sid in c.responses and c.responses[sid].ended):
                    if c.read_frame(20) is None:  # closed (or reset) before our stream ended
                        break
                r = c.responses.get(sid)
                if r is not None and r.ended and r.reset is None:
                    tally.add(f"grpc-status {r.grpc_status}")
                elif r is not None and r.reset == 7 or c.goaway is not None and sid > c.goaway[0]:
                    tally.add("not processed")  # REFUSED_STREAM / above GOAWAY's last stream: safe to retry
                else:
                    tally.add("failure", f"gRPC stream {sid}: unanswered (reset {getattr(r, 'reset', None)}, "
                                         f"GOAWAY {c.goaway})")
                    break
                sid += 2
        except OSError as exc:  # a reset while sending
            tally.add("failure", f"gRPC send: {exc!r}")
        finally:
            c.close()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("drain")


@pytest.mark.parametrize("run", range(RUNS))
def test_sigterm_under_load_resets_no_client(model_dir, run):
    tally, stop = Tally(), threading.Event()
    with served(model_dir, "--drain-timeout", "10") as srv:
        threads = [threading.Thread(target=http_client, args=(srv.http_port, False, tally, stop)) for _ in range(4)]
        threads += [threading.Thread(target=http_client, args=(srv.http_port, True, tally, stop)) for _ in range(4)]
        threads += [threading.Thread(target=grpc_client, args=(srv.grpc_port, 1, tally, stop)) for _ in range(2)]
        threads += [threading.Thread(target=grpc_client, args=(srv.grpc_port, 10**6, tally, stop)) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(LOAD_S)
        code = srv.stop()  # SIGTERM; clients keep going until refused
        for t in threads:
            t.join(20)
        stop.set()
        assert code == 0, srv.output()[-2000:]
    assert not any(t.is_alive() for t in threads), "a client never finished: a request was left unanswered"
    c = tally.counts
    assert not tally.failures, f"run {run}: {len(tally.failures)} failures {tally.failures[:5]}; {dict(c)}"
    assert c["200"] > 0 and c["grpc-status 0"] > 0, dict(c)  # there was load before the drain
    assert c["refused"] == len(threads), dict(c)  # every client ran until the server was gone
    print(f"run {run}: {dict(c)}")  # pytest -s shows what each run saw
