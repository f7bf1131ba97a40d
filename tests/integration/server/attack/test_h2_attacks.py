"""HTTP/2 attacks on the gRPC port of a real ``xinfer-sdk serve`` (issue 19, rows 1-18 of the probe report), one test
per class, each bounded in count and time: the connection is ended (GOAWAY ENHANCE_YOUR_CALM on the native
transport), memory stays bounded, a normal client (``Probe``) keeps its latency, and the server drains cleanly
(the harness asserts exit 0).

The transport is ``native`` unless ``XINFER_ATTACK_GRPC_IMPL=grpcio``: the same attacks against grpc.aio, for the
side-by-side table in docs/security.md (assertions on GOAWAY codes apply to native only; grpcio may just close).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest
from harness import Probe, served

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "unit" / "server"))
from h2_raw import RawH2, grpc_message, request_block  # noqa: E402

from xinfer_sdk.server.h2grpc import frames as F  # noqa: E402

IMPL = os.environ.get("XINFER_ATTACK_GRPC_IMPL", "native")
NATIVE = IMPL == "native"
FLAGS = ("--grpc-impl", IMPL, "--idle-timeout", "1", "--header-timeout", "1", "--body-timeout", "2",
         "--max-buffered", "32MiB", "--max-body", "30MiB")
PROBE_MS = 1000  # a normal call during any flood (the report measured 0.6 to 6.4 s before the fixes)
MODEL_INFER = "ModelInfer"


def infer_request() -> bytes:
    from xinfer_sdk.server._proto import grpc_service_pb2 as pb

    r = pb.ModelInferRequest(model_name="mlp")
    r.inputs.add(name="input", datatype="FP32", shape=[1, 8])
    r.raw_input_contents.append(b"\x00\x00\x00\x3f" * 8)
    return r.SerializeToString()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with served(tmp_path_factory.mktemp("h2attack"), *FLAGS) as s:
        yield s


def ended(c: RawH2, timeout: float = 10.0) -> bool:
    """Read until the server closes; True when it did (GOAWAY, if any, is in c.goaway)."""
    try:
        c.until_closed(timeout)
    except (TimeoutError, OSError):
        return False
    return True


def calm(c: RawH2) -> bool:
    """Native: GOAWAY(ENHANCE_YOUR_CALM) then close. grpcio: a close, or GOAWAY(ENHANCE_YOUR_CALM), counts."""
    closed = ended(c)
    told = c.goaway is not None and c.goaway[1] == F.ENHANCE_YOUR_CALM
    return (closed and told) if NATIVE else (closed or told)


def flood(c: RawH2, chunk: bytes, seconds: float = 3.0, max_bytes: int = 256 << 20) -> int:
    """Send ``chunk`` repeatedly until the server stops reading or closes, or for ``seconds``; bytes sent."""
    sent, end = 0, time.time() + seconds
    c.sock.settimeout(0.5)
    while time.time() < end and sent < max_bytes:
        try:
            c.sock.sendall(chunk)
        except (TimeoutError, OSError):
            break
        sent += len(chunk)
    c.sock.settimeout(10)
    return sent


def repeat(frame: bytes, size: int = 256 << 10) -> bytes:
    return frame * max(1, size // len(frame))


# -- floods: the connection is ended, a normal client does not notice ---------------------------------------------
@pytest.mark.parametrize("kind", ["PING", "SETTINGS", "PRIORITY", "empty DATA", "empty HEADERS"])
def test_floods_are_ended_and_normal_clients_keep_their_latency(srv, kind):
    with Probe(srv) as probe:
        time.sleep(0.5)
        c = RawH2(srv.grpc_port)
        if kind == "empty DATA":
            c.send(F.frame(F.HEADERS, F.END_HEADERS, 1, request_block(MODEL_INFER)))
        if kind == "empty HEADERS":  # a new stream per frame, each with an empty header block
            chunk = b"".join(F.frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 2 * k + 1, b"") for k in range(20000))
        else:
            chunk = repeat({"PING": F.frame(F.PING, 0, 0, b"12345678"), "SETTINGS": F.frame(F.SETTINGS, 0, 0),
                            "PRIORITY": F.frame(F.PRIORITY, 0, 3, b"\x00\x00\x00\x01\x10"),
                            "empty DATA": F.frame(F.DATA, 0, 1, b"")}[kind])
        sent = flood(c, chunk)
        ok = calm(c)
        print(f"[{IMPL}] {kind} flood: {sent >> 10} KiB sent, GOAWAY {c.goaway and c.goaway[1:]}, closed {c.closed}")
        assert ok, f"{kind} flood: still open (GOAWAY {c.goaway})"
        time.sleep(0.5)
    print(f"[{IMPL}] probe during the {kind} flood: {probe.summary()}")
    assert not probe.failures and probe.max_ms() < PROBE_MS, probe.summary()


@pytest.mark.parametrize("size", [0, 16384])
def test_continuation_flood_is_ended_with_memory_bounded(srv, size):
    rss0 = srv.rss_mib()
    c = RawH2(srv.grpc_port)
    c.send(F.frame(F.HEADERS, 0, 1, request_block(MODEL_INFER)))
    sent = flood(c, repeat(F.frame(F.CONTINUATION, 0, 1, b"\x00" * size)), seconds=3, max_bytes=64 << 20)
    ok = calm(c)
    print(f"[{IMPL}] CONTINUATION {size} B: {sent >> 10} KiB sent, GOAWAY {c.goaway and c.goaway[1:]}, "
          f"RSS +{srv.rss_mib() - rss0:.1f} MiB")
    assert ok, f"CONTINUATION flood ({size} B frames): still open"
    assert srv.rss_mib() < rss0 + 16


def test_settings_with_many_entries_and_200_streams_cost_milliseconds(srv):
    c = RawH2(srv.grpc_port)
    c.send(b"".join(F.frame(F.HEADERS, F.END_HEADERS, 2 * k + 1, request_block(MODEL_INFER)) for k in range(200)))
    entries = F.settings({F.INITIAL_WINDOW_SIZE: 1})[9:] * 2000  # 12 KB: fits any peer's frame size
    t = time.time()
    c.send(F.frame(F.SETTINGS, 0, 0, entries) * 4 + F.frame(F.PING, 0, 0, b"after-st"))
    while b"after-st" not in c.pings:
        assert c.read_frame(10) is not None, f"closed (GOAWAY {c.goaway})"
    print(f"[{IMPL}] 4 SETTINGS x 2000 entries, 200 open streams: PING answered after {(time.time() - t) * 1e3:.0f} ms")
    assert time.time() - t < 0.5


@pytest.mark.parametrize("mode", ["naive", "interleaved"])
def test_rapid_reset_gets_goaway(srv, mode):
    c = RawH2(srv.grpc_port)
    msg = grpc_message(infer_request())
    frames = []
    sid = 1
    for _ in range(1000):
        frames.append(F.frame(F.HEADERS, F.END_HEADERS, sid, request_block(MODEL_INFER)) + F.frame(F.DATA, 0, sid, msg)
                      + F.rst_stream(sid, F.CANCEL))
        if mode == "interleaved":  # one normal call per cancelled one
            frames.append(F.frame(F.HEADERS, F.END_HEADERS, sid + 2, request_block("ServerLive"))
                          + F.frame(F.DATA, F.END_STREAM, sid + 2, grpc_message(b"")))
            sid += 2
        sid += 2
    flood(c, b"".join(frames), seconds=5, max_bytes=64 << 20)
    ok = calm(c)
    print(f"[{IMPL}] rapid reset {mode}: GOAWAY {c.goaway and c.goaway[1:]}, closed {c.closed}")
    assert ok, f"rapid reset ({mode}): no GOAWAY"


# -- holding resources: timeouts, budgets, bounded state ------------------------------------------------------------
def test_connections_holding_streams_preface_only_or_silent_are_closed_by_the_timeouts(srv):
    fds0 = srv.fds()
    holders = []
    for _ in range(40):  # 40 connections x 20 streams whose requests never end
        c = RawH2(srv.grpc_port)
        c.send(b"".join(F.frame(F.HEADERS, F.END_HEADERS, 2 * k + 1, request_block(MODEL_INFER))
                        + F.frame(F.DATA, 0, 2 * k + 1, grpc_message(infer_request())[:7]) for k in range(20)))
        holders.append(c)
    prefaces = [RawH2(srv.grpc_port, preface=None) for _ in range(20)]
    for c in prefaces:
        c.send(F.PREFACE)
    silent = [socket.create_connection(("127.0.0.1", srv.grpc_port)) for _ in range(20)]
    t = time.time()
    while srv.fds() < fds0 + 70 and time.time() - t < 3:
        time.sleep(0.05)
    assert srv.fds() >= fds0 + 70, "the connections were not all accepted"
    deadline = time.time() + 10
    for c in holders + prefaces:
        assert ended(c, max(0.1, deadline - time.time())), "a connection outlived the timeouts"
    for s in silent:
        s.settimeout(max(0.1, deadline - time.time()))
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            pass
        s.close()
    time.sleep(0.5)
    print(f"[{IMPL}] 40 x 20 held streams, 20 preface-only, 20 silent: all closed after {time.time() - deadline + 10:.1f} s")
    assert srv.fds() <= fds0 + 5


def test_big_unfinished_messages_are_bounded_by_the_budget(srv):
    rss0 = srv.rss_mib()
    head = request_block(MODEL_INFER)
    prefix = b"\x00" + (29 << 20).to_bytes(4, "big")  # a 29 MiB message, of which 8 MiB (the stream window) is sent
    part = prefix + b"\x00" * ((8 << 20) - 5 - 9 * 8)
    conns = []
    for _ in range(4):
        c = RawH2(srv.grpc_port)
        for sid in (1, 3):
            c.send(F.frame(F.HEADERS, F.END_HEADERS, sid, head))
            for k in range(0, len(part), 1 << 20):
                c.send(F.frame(F.DATA, 0, sid, part[k:k + (1 << 20)]))
        conns.append(c)
    time.sleep(0.5)
    grown = srv.rss_mib() - rss0
    assert grown < 64, "64 MiB sent, 32 MiB budget"
    refused = 0
    for c in conns:
        for sid in (1, 3):
            try:
                r = c.response(sid, timeout=6)
            except (ConnectionError, TimeoutError, OSError):
                refused += 1  # grpcio: the connection is closed
                continue
            refused += r.grpc_status in (4, 8) or r.reset is not None
    print(f"[{IMPL}] 8 x 8 MiB of unfinished 29 MiB messages: RSS +{grown:.0f} MiB, {refused} of 8 ended")
    assert refused == 8  # over the budget: RESOURCE_EXHAUSTED; the rest: DEADLINE_EXCEEDED (--body-timeout 2)


def test_header_cache_fill_is_bounded(srv):
    rss0 = srv.rss_mib()
    conns = []
    for n in range(60):  # 60 connections x 256 distinct ~4 KB blocks (1 MiB per connection before the fix)
        c = RawH2(srv.grpc_port)
        c.send(b"".join(F.frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 2 * k + 1,
                                request_block("ServerLive", {"x-fill": f"{n}-{k}-" + "f" * 3900})) for k in range(256)))
        conns.append(c)
    time.sleep(0.5)
    grown = srv.rss_mib() - rss0
    for c in conns:
        c.close()
    print(f"[{IMPL}] header cache fill, 60 connections: RSS +{grown:.1f} MiB")
    assert grown < 24, f"RSS grew {grown:.0f} MiB for 60 idle connections"


def test_grpc_timeout_on_an_unfinished_request_is_deadline_exceeded(srv):
    c = RawH2(srv.grpc_port)
    c.send(F.frame(F.HEADERS, F.END_HEADERS, 1, request_block(MODEL_INFER, {"grpc-timeout": "500m"}))
           + F.frame(F.DATA, 0, 1, grpc_message(infer_request())[:10]))
    t = time.time()
    r = c.response(1, timeout=5)
    assert r.grpc_status == 4 and time.time() - t < 2.5


def test_stream_id_and_closed_stream_nits(srv):
    c = RawH2(srv.grpc_port)
    c.send(F.frame(F.HEADERS, F.END_HEADERS, 1, request_block(MODEL_INFER))
           + F.frame(F.DATA, F.END_STREAM, 1, grpc_message(infer_request())) + F.frame(F.DATA, 0, 1, b"late"))
    r = c.response(1)  # DATA after END_STREAM: a stream error (STREAM_CLOSED) that ends the call
    c.send(F.frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 7, request_block("ServerLive"))
           + F.frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 5, request_block("ServerLive")))
    ended(c)
    if NATIVE:
        assert r.reset == F.STREAM_CLOSED and c.goaway is not None and c.goaway[1] == F.PROTOCOL_ERROR
