"""The native gRPC endpoint's HTTP/2 layer through a raw socket: well-formed calls (CONTINUATION, padding,
priority, unknown frames), flow control with tiny client windows, cancellation by RST_STREAM, and the
connection / stream errors a broken or hostile client gets (GOAWAY / RST_STREAM with the right code) while
the server keeps serving other connections."""

from __future__ import annotations

import gzip
import time

import numpy as np
import pytest
from h2_raw import RawH2, grpc_message, request_block
from server_doubles import make_model

from xinfer_sdk.server._proto import grpc_service_pb2 as pb
from xinfer_sdk.server.h2grpc import frames as F
from xinfer_sdk.server.h2grpc.hpack import literal


def infer_body(n=1, value=1.0, rid="") -> bytes:
    x = np.full((n, 4), value, np.float32)
    r = pb.ModelInferRequest(model_name="dbl", id=rid)
    r.inputs.add(name="x", datatype="FP32", shape=[n, 4])
    r.raw_input_contents.append(x.tobytes())
    return r.SerializeToString()


def infer_output(resp) -> np.ndarray:
    (msg,) = resp.messages()
    r = pb.ModelInferResponse.FromString(msg)
    return np.frombuffer(r.raw_output_contents[0], np.float32).reshape(list(r.outputs[0].shape))


def wait_until(cond, timeout=10.0):
    t0 = time.time()
    while not cond():
        assert time.time() - t0 < timeout, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def srv(serve):
    return serve([make_model()], grpc_impl="native")


def healthy(port) -> None:
    """A fresh connection still gets answers."""
    c = RawH2(port)
    c.call(1, "ServerLive", b"")
    r = c.response(1)
    assert r.grpc_status == 0 and pb.ServerLiveResponse.FromString(r.messages()[0]).live
    c.close()


# -- well-formed traffic ---------------------------------------------------------------------------------
def test_unary_calls_settings_and_ping(srv):
    c = RawH2(srv.grpc_port)
    c.frame(F.PING, 0, 0, b"12345678")
    c.call(1, "ServerLive", b"")
    c.call(3, "ModelInfer", infer_body(2, 3.0, rid="a"))
    r = c.response(3)
    assert r.header(":status") == "200" and r.header("content-type") == "application/grpc"
    np.testing.assert_array_equal(infer_output(r), np.full((2, 4), 6.0, np.float32))
    assert c.response(1).grpc_status == 0 and b"12345678" in c.pings
    s = c.server_settings
    assert s[F.MAX_CONCURRENT_STREAMS] >= 100 and s[F.INITIAL_WINDOW_SIZE] >= 65535
    assert any(sid == 0 for sid, _ in c.window_updates)  # the connection window was raised at once


def test_continuation_padding_priority_and_unknown_frames(srv):
    c = RawH2(srv.grpc_port)
    block = request_block("ModelInfer", {"x-pad": "p" * 100})
    # HEADERS (padded, with priority) + 2 CONTINUATION; an unknown frame type and a PRIORITY frame around it
    c.frame(0xFA, 0, 0, b"whatever")
    head = bytes([7]) + b"\x00\x00\x00\x00\x10" + block[:10] + b"\x00" * 7
    c.frame(F.HEADERS, F.PADDED | F.PRIORITY_FLAG, 1, head)
    c.frame(F.CONTINUATION, 0, 1, block[10:50])
    c.frame(F.CONTINUATION, F.END_HEADERS, 1, block[50:])
    c.frame(F.PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10")
    body = grpc_message(infer_body(1, 2.0))
    c.frame(F.DATA, F.PADDED, 1, bytes([3]) + body[:7] + b"\x00\x00\x00")  # message split over DATA frames
    c.frame(F.DATA, 0, 1, body[7:])
    c.frame(F.DATA, F.END_STREAM, 1, b"")
    r = c.response(1)
    np.testing.assert_array_equal(infer_output(r), np.full((1, 4), 4.0, np.float32))


def test_tiny_client_windows_still_get_the_whole_answer(srv):
    # stream window 10 bytes, connection window 65535 (never raised but by our WINDOW_UPDATEs)
    c = RawH2(srv.grpc_port, settings={F.INITIAL_WINDOW_SIZE: 10}, auto_window=False)
    n = 3000  # 48 KB of output: above the client's 16 KB MAX_FRAME_SIZE and, with two calls, its connection window
    c.call(1, "ModelInfer", infer_body(n, 1.0))
    c.call(3, "ModelInfer", infer_body(n, 2.0))
    got = {1: 0, 3: 0}
    steps = {1: 0, 3: 0}
    while not all(c.responses.get(s) and c.responses[s].ended for s in (1, 3)):
        fr = c.read_frame()
        assert fr is not None
        ftype, _, sid, payload = fr
        if ftype == F.DATA:
            assert len(payload) <= 16384
            got[sid] += len(payload)
            assert got[sid] <= 10 + 1000 * steps[sid]  # never beyond what the windows allowed
            if payload:
                c.send(F.window_update(0, len(payload)))
        if ftype in (F.HEADERS, F.DATA) and not c.responses[sid].ended:
            steps[sid] += 1
            c.send(F.window_update(sid, 1000))  # open the stream window in small steps
    for sid, v in ((1, 2.0), (3, 4.0)):
        np.testing.assert_array_equal(infer_output(c.responses[sid]), np.full((n, 4), v, np.float32))
    # the client raising its initial window later resumes a blocked stream as well
    c2 = RawH2(srv.grpc_port, settings={F.INITIAL_WINDOW_SIZE: 0})
    c2.call(1, "ModelInfer", infer_body(4))
    time.sleep(0.2)
    assert 1 not in c2.responses or not c2.responses[1].data
    c2.frame(F.SETTINGS, 0, 0, F.settings({F.INITIAL_WINDOW_SIZE: 1 << 20})[9:])
    np.testing.assert_array_equal(infer_output(c2.response(1)), np.full((4, 4), 2.0, np.float32))


def test_rst_stream_withdraws_a_queued_request(serve, gate):
    gate.clear()
    model = make_model(gate=gate, max_batch_size=1)
    srv = serve([model], grpc_impl="native")
    c = RawH2(srv.grpc_port)
    c.call(1, "ModelInfer", infer_body(1, 1.0))
    wait_until(lambda: model.stats()["in_flight"] == 1)  # running, blocked on the gate
    c.call(3, "ModelInfer", infer_body(1, 5.0))
    wait_until(lambda: model.stats()["in_flight"] == 2)
    c.send(F.rst_stream(3, F.CANCEL))
    time.sleep(0.1)
    gate.set()
    np.testing.assert_array_equal(infer_output(c.response(1)), np.full((1, 4), 2.0, np.float32))
    c.call(5, "ModelInfer", infer_body(1, 1.0))  # the worker drops the withdrawn request when it looks next
    assert c.response(5).grpc_status == 0
    wait_until(lambda: model.stats()["in_flight"] == 0)
    assert model.stats()["samples"] == 2  # the cancelled request never ran
    time.sleep(0.1)
    c.frame(F.PING, 0, 0, b"pingpong")
    while b"pingpong" not in c.pings:
        assert c.read_frame() is not None
    assert 3 not in c.responses  # nothing was sent for the cancelled stream
    # a client that disconnects with a request queued does not hurt the server either
    gate.clear()
    entered = len(model.entered)
    c.call(7, "ModelInfer", infer_body())
    wait_until(lambda: len(model.entered) == entered + 1)  # 7 is running, blocked on the gate
    c.call(9, "ModelInfer", infer_body())
    wait_until(lambda: model.stats()["in_flight"] == 2)
    c.close()
    time.sleep(0.1)
    gate.set()
    healthy(srv.grpc_port)
    c = RawH2(srv.grpc_port)
    c.call(1, "ModelInfer", infer_body())
    assert c.response(1).grpc_status == 0
    wait_until(lambda: model.stats()["in_flight"] == 0)
    assert model.stats()["samples"] == 4  # 7 ran (it was running), 9 was withdrawn


# -- gRPC-level answers ------------------------------------------------------------------------------------
def test_grpc_errors_on_the_wire(srv):
    c = RawH2(srv.grpc_port)
    c.call(1, "NoSuchRpc", b"")
    c.call(3, "ModelInfer", b"\xff\xff\xff")  # not a protobuf message
    c.call(5, "TraceSetting", b"")  # a Triton RPC this server does not implement
    c.call(7, "ModelInfer", infer_body(), extra={"grpc-timeout": "soon"})
    c.send(F.frame(F.HEADERS, F.END_HEADERS, 9, request_block("ModelInfer", {"grpc-encoding": "br"}))
           + F.frame(F.DATA, F.END_STREAM, 9, grpc_message(b"\x01\x02", compressed=True)))
    c.send(F.frame(F.HEADERS, F.END_HEADERS, 11, request_block("ModelInfer"))
           + F.frame(F.DATA, F.END_STREAM, 11, grpc_message(gzip.compress(b"junk"), compressed=True)))
    c.send(F.frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 13, request_block("ModelInfer")))  # no message
    c.send(F.frame(F.HEADERS, F.END_HEADERS, 15, request_block("ModelInfer"))
           + F.frame(F.DATA, F.END_STREAM, 15, grpc_message(infer_body()) + grpc_message(infer_body())))
    c.send(F.frame(F.HEADERS, F.END_HEADERS, 17, request_block("ModelInfer"))
           + F.frame(F.DATA, F.END_STREAM, 17, grpc_message(infer_body())[:-3]))  # ends inside the message
    c.send(F.frame(F.HEADERS, F.END_HEADERS, 19, request_block("ModelInfer", {"grpc-encoding": "gzip"}))
           + F.frame(F.DATA, F.END_STREAM, 19, grpc_message(gzip.compress(infer_body(2, 4.0)), compressed=True)))
    expect = {1: 12, 3: 3, 5: 12, 7: 3, 9: 12, 11: 13, 13: 13, 15: 13, 17: 13}
    for sid, code in expect.items():
        r = c.response(sid)
        assert r.grpc_status == code, (sid, r.headers, r.trailers)
        assert r.header("grpc-message")
    assert "gzip" in c.response(9).header("grpc-accept-encoding")
    np.testing.assert_array_equal(infer_output(c.response(19)), np.full((2, 4), 8.0, np.float32))
    c.call(21, "ModelInfer", infer_body(), extra={"grpc-encoding": "br"})  # names it, but sends plain: fine
    assert c.response(21).grpc_status == 0


def test_http_level_refusals_and_malformed_requests(srv):
    c = RawH2(srv.grpc_port)
    c.call(1, "ServerLive", b"", extra={})
    c.send(F.frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 3, request_block("ServerLive", method=b"GET")))
    c.send(F.frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 5,
                   request_block("ServerLive", content_type=b"application/json")))
    c.send(F.frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 7, request_block("ServerLive", {"Upper": "x"})))
    c.send(F.frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 9, literal(b":method", b"POST")))  # no :path
    c.send(F.frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 11,
                   request_block("ServerLive", {"connection": "keep-alive"})))
    assert c.response(1).grpc_status == 0
    assert c.response(3).header(":status") == "405"
    assert c.response(5).header(":status") == "415"
    for sid in (7, 9, 11):
        assert c.response(sid).reset == F.PROTOCOL_ERROR
    c.call(13, "ServerLive", b"")
    assert c.response(13).grpc_status == 0  # the connection lives on after stream errors


def test_limits_oversized_metadata_and_message(serve):
    srv = serve([make_model()], grpc_impl="native", max_body=4096)
    c = RawH2(srv.grpc_port)
    c.call(1, "ModelInfer", infer_body(), extra={"x-big": "b" * 20000})  # > 16 KiB header list
    r = c.response(1)
    assert r.grpc_status == 8 and "metadata" in r.header("grpc-message")
    c.call(3, "ModelInfer", infer_body(400))  # 6.4 KB message > --max-body 4096
    r = c.response(3)
    assert r.grpc_status == 8 and "larger than max" in r.header("grpc-message")
    c.call(5, "ModelInfer", infer_body(2))
    assert c.response(5).grpc_status == 0
    # too many concurrent streams: REFUSED_STREAM beyond the limit
    srv.grpc.limits.max_streams = 1
    c2 = RawH2(srv.grpc_port)
    c2.send(F.frame(F.HEADERS, F.END_HEADERS, 1, request_block("ModelInfer")))  # stays open (no DATA yet)
    c2.call(3, "ServerLive", b"")
    assert c2.response(3).reset == F.REFUSED_STREAM
    c2.frame(F.DATA, F.END_STREAM, 1, grpc_message(infer_body()))
    assert c2.response(1).grpc_status == 0


# -- connection errors: GOAWAY with the right code, other connections unharmed -------------------------------
def _goaway(port, send, preface=F.PREFACE) -> int:
    c = RawH2(port, preface=preface)
    send(c)
    c.until_closed()
    assert c.goaway is not None, "expected a GOAWAY before the close"
    c.close()
    healthy(port)
    return c.goaway[1]


@pytest.mark.parametrize("case, code", [
    ("bad preface", F.PROTOCOL_ERROR),
    ("first frame not SETTINGS", F.PROTOCOL_ERROR),
    ("frame above MAX_FRAME_SIZE", F.FRAME_SIZE_ERROR),
    ("DATA on an idle stream", F.PROTOCOL_ERROR),
    ("HEADERS on an even stream", F.PROTOCOL_ERROR),
    ("HEADERS on stream 0", F.PROTOCOL_ERROR),
    ("HPACK index out of range", F.COMPRESSION_ERROR),
    ("CONTINUATION without HEADERS", F.PROTOCOL_ERROR),
    ("frame between HEADERS and CONTINUATION", F.PROTOCOL_ERROR),
    ("PING of 7 bytes", F.FRAME_SIZE_ERROR),
    ("SETTINGS of 5 bytes", F.FRAME_SIZE_ERROR),
    ("SETTINGS_INITIAL_WINDOW_SIZE 2^31", F.FLOW_CONTROL_ERROR),
    ("SETTINGS_MAX_FRAME_SIZE 100", F.PROTOCOL_ERROR),
    ("connection WINDOW_UPDATE of 0", F.PROTOCOL_ERROR),
    ("connection window overflow", F.FLOW_CONTROL_ERROR),
    ("RST_STREAM on an idle stream", F.PROTOCOL_ERROR),
    ("PUSH_PROMISE from a client", F.PROTOCOL_ERROR),
    ("DATA padding longer than the frame", F.PROTOCOL_ERROR),
    ("stream id going backwards", F.PROTOCOL_ERROR),
    ("stream id reused", F.STREAM_CLOSED),
])
def test_connection_errors_answer_goaway(srv, case, code):
    port = srv.grpc_port
    live = F.frame(F.HEADERS, F.END_HEADERS, 1, request_block("ServerLive"))
    sends = {
        "frame above MAX_FRAME_SIZE": lambda c: c.send(F.HEADER.pack(((2 << 20) << 8) | F.DATA, 0, 1)),
        "DATA on an idle stream": lambda c: c.frame(F.DATA, 0, 5, b"abc"),
        "HEADERS on an even stream": lambda c: c.frame(F.HEADERS, F.END_HEADERS, 2, request_block("ServerLive")),
        "HEADERS on stream 0": lambda c: c.frame(F.HEADERS, F.END_HEADERS, 0, request_block("ServerLive")),
        "HPACK index out of range": lambda c: c.frame(F.HEADERS, F.END_HEADERS, 1, b"\xc5"),
        "CONTINUATION without HEADERS": lambda c: c.frame(F.CONTINUATION, F.END_HEADERS, 1, b"\x82"),
        "frame between HEADERS and CONTINUATION": lambda c: c.send(
            F.frame(F.HEADERS, 0, 1, request_block("ServerLive")) + F.frame(F.PING, 0, 0, b"x" * 8)),
        "PING of 7 bytes": lambda c: c.frame(F.PING, 0, 0, b"x" * 7),
        "SETTINGS of 5 bytes": lambda c: c.frame(F.SETTINGS, 0, 0, b"x" * 5),
        "SETTINGS_INITIAL_WINDOW_SIZE 2^31": lambda c: c.send(F.settings({F.INITIAL_WINDOW_SIZE: 1 << 31})),
        "SETTINGS_MAX_FRAME_SIZE 100": lambda c: c.send(F.settings({F.MAX_FRAME_SIZE: 100})),
        "connection WINDOW_UPDATE of 0": lambda c: c.send(F.window_update(0, 0)),
        "connection window overflow": lambda c: c.send(F.window_update(0, (1 << 31) - 1)),
        "RST_STREAM on an idle stream": lambda c: c.send(F.rst_stream(9, F.CANCEL)),
        "PUSH_PROMISE from a client": lambda c: c.frame(F.PUSH_PROMISE, F.END_HEADERS, 1, b"\x00\x00\x00\x02\x82"),
        "DATA padding longer than the frame": lambda c: c.send(live + F.frame(F.DATA, F.PADDED, 1, b"\x09abc")),
        "stream id going backwards": lambda c: c.send(
            F.frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 5, request_block("ServerLive"))
            + F.frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 3, request_block("ServerLive"))),
        "stream id reused": lambda c: (c.call(5, "ServerLive", b""), c.response(5),
                                       c.send(F.frame(F.HEADERS, F.END_HEADERS, 5, request_block("ServerLive")))),
    }
    if case == "bad preface":
        got = _goaway(port, lambda c: None, preface=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    elif case == "first frame not SETTINGS":
        got = _goaway(port, lambda c: None, preface=F.PREFACE + F.frame(F.PING, 0, 0, b"x" * 8))
    else:
        got = _goaway(port, sends[case])
    assert got == code


def test_stream_errors_answer_rst_stream(srv):
    c = RawH2(srv.grpc_port)
    c.send(F.frame(F.HEADERS, F.END_HEADERS, 1, request_block("ServerLive")) + F.window_update(1, 0))
    assert c.response(1).reset == F.PROTOCOL_ERROR
    c.send(F.frame(F.HEADERS, F.END_HEADERS, 3, request_block("ServerLive"))
           + F.window_update(3, (1 << 31) - 1))
    assert c.response(3).reset == F.FLOW_CONTROL_ERROR
    c.call(5, "ServerLive", b"")
    c.frame(F.DATA, 0, 5, b"late")  # DATA after END_STREAM (or on the answered stream): no connection error
    assert c.response(5).grpc_status == 0
    c.frame(F.PRIORITY, 0, 7, b"\x00\x00")
    assert c.response(7).reset == F.FRAME_SIZE_ERROR
    c.call(9, "ServerLive", b"")
    assert c.response(9).grpc_status == 0 and c.goaway is None


def test_drain_sends_goaway_and_finishes_open_calls(serve, gate):
    gate.clear()
    model = make_model(gate=gate, max_batch_size=1)
    srv = serve([model], grpc_impl="native", drain_timeout=10)
    c = RawH2(srv.grpc_port)
    c.call(1, "ModelInfer", infer_body(1, 3.0))
    wait_until(lambda: model.stats()["in_flight"] == 1)
    srv.request_stop()
    wait_until(lambda: srv.service.draining)
    c.call(3, "ModelInfer", infer_body())  # after the drain's GOAWAY: refused, so a client retries it elsewhere
    r3 = c.response(3)
    assert r3.reset == F.REFUSED_STREAM or r3.grpc_status == 14
    gate.set()
    np.testing.assert_array_equal(infer_output(c.response(1)), np.full((1, 4), 6.0, np.float32))
    c.until_closed()
    # the last GOAWAY names the last stream processed: 1 (being answered), or 3 when it was answered UNAVAILABLE
    assert c.goaway is not None and c.goaway[1] == F.NO_ERROR and c.goaway[0] == (3 if r3.grpc_status == 14 else 1)
    srv._thread.join(10)
    assert srv.drained_cleanly is True


def test_client_goaway_closes_the_connection_after_its_calls(srv):
    c = RawH2(srv.grpc_port)
    c.call(1, "ServerLive", b"")
    c.send(F.goaway(0, F.NO_ERROR))
    assert c.response(1).grpc_status == 0
    c.until_closed()
    assert c.closed


def test_rapid_reset_flood_is_refused(srv):
    c = RawH2(srv.grpc_port)
    head = request_block("ModelInfer")
    burst = b"".join(F.frame(F.HEADERS, F.END_HEADERS, sid, head) + F.rst_stream(sid, F.CANCEL)
                     for sid in range(1, 2 * 1200, 2))
    c.send(burst)
    c.until_closed()
    assert c.goaway is not None and c.goaway[1] == F.ENHANCE_YOUR_CALM
    healthy(srv.grpc_port)


def test_a_strict_independent_http2_client_accepts_our_frames(srv):
    """python-hyper's h2 (a strict RFC 9113 state machine) as the client: headers validated, flow control on."""
    h2conn = pytest.importorskip("h2.connection")
    h2config = pytest.importorskip("h2.config")
    h2events = pytest.importorskip("h2.events")
    import socket
    import struct

    s = socket.create_connection(("127.0.0.1", srv.grpc_port), timeout=10)
    conn = h2conn.H2Connection(config=h2config.H2Configuration(client_side=True, header_encoding=None,
                                                               validate_inbound_headers=True))
    conn.initiate_connection()
    # a 100-byte stream window (answers and their trailers must wait for it) and an HPACK table of 0 bytes (h2
    # then requires a table size update at the start of the next header block it decodes)
    conn.update_settings({0x4: 100, 0x1: 0})
    s.sendall(conn.data_to_send())
    ids = {}
    for k, n in enumerate((1, 200, 3)):
        sid = conn.get_next_available_stream_id()
        ids[sid] = n
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", "/inference.GRPCInferenceService/"
                                "ModelInfer"), (":authority", "x"), ("content-type", "application/grpc"),
                                ("te", "trailers")])
        conn.send_data(sid, grpc_message(infer_body(n, float(k))), end_stream=True)
    s.sendall(conn.data_to_send())
    bodies = {sid: b"" for sid in ids}
    trailers = {}
    while len(trailers) < len(ids):
        data = s.recv(65536)
        assert data, "server closed the connection"
        for ev in conn.receive_data(data):
            if isinstance(ev, h2events.DataReceived):
                bodies[ev.stream_id] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2events.TrailersReceived):
                trailers[ev.stream_id] = dict(ev.headers)
            elif isinstance(ev, (h2events.StreamReset, h2events.ConnectionTerminated)):
                raise AssertionError(f"unexpected {ev}")
        s.sendall(conn.data_to_send())
    s.close()
    for k, (sid, n) in enumerate(ids.items()):
        assert trailers[sid][b"grpc-status"] == b"0"
        msg = bodies[sid][5:]
        assert struct.unpack(">I", bodies[sid][1:5])[0] == len(msg)
        r = pb.ModelInferResponse.FromString(msg)
        np.testing.assert_array_equal(np.frombuffer(r.raw_output_contents[0], np.float32).reshape(n, 4),
                                      np.full((n, 4), 2.0 * k, np.float32))


def test_random_frames_never_hurt_the_server(srv):
    hyp = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")
    frame = st.tuples(st.integers(0, 12), st.integers(0, 255), st.sampled_from([0, 1, 2, 3, 5, 2**31 - 1]),
                      st.binary(max_size=40))

    @hyp.settings(max_examples=150, deadline=None)
    @hyp.given(st.lists(frame, max_size=6))
    def check(frames):
        c = RawH2(srv.grpc_port, timeout=5)
        c.call(1, "ServerLive", b"", end=False)
        c.send(b"".join(F.frame(t, fl, sid, p) for t, fl, sid, p in frames))
        c.frame(F.PING, 0, 0, b"fuzzfuzz")
        while b"fuzzfuzz" not in c.pings:  # the server answers the PING, or ends the connection with GOAWAY
            if c.read_frame(5) is None:
                assert c.goaway is not None
                break
        assert c.goaway is None or c.goaway[1] != F.INTERNAL_ERROR, c.goaway  # never a bug of ours
        c.close()

    check()
    healthy(srv.grpc_port)
