"""gRPC's wire format pieces of the native endpoint: grpc-timeout, grpc-message percent-encoding, request header
validation, message decompression."""

from __future__ import annotations

import gzip
import zlib

import pytest

from xinfer_sdk.server.h2grpc import grpcwire as W
from xinfer_sdk.server.h2grpc.hpack import Decoder


@pytest.mark.parametrize("value, seconds", [(b"1S", 1.0), (b"100m", 0.1), (b"2H", 7200.0), (b"3M", 180.0),
                                            (b"250u", 250e-6), (b"99999999n", 0.099999999), (b"0S", 0.0)])
def test_grpc_timeout(value, seconds):
    assert W.parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"S", b"10", b"1s", b"123456789S", b"-1S", b"1.5S", b"1 S"])
def test_grpc_timeout_malformed(value):
    with pytest.raises(ValueError):
        W.parse_timeout(value)


def test_grpc_message_percent_encoding():
    assert W.percent_encode("plain text: ok") == b"plain text: ok"
    assert W.percent_encode("100% sure") == b"100%25 sure"
    assert W.percent_encode("modèle\n") == b"mod%C3%A8le%0A"
    assert len(W.percent_encode("x" * 5000)) == W.MAX_STATUS_MESSAGE + 3


def test_trailers_decode_to_status_and_message():
    block = W.RESPONSE_HEADERS + W.trailers(5, "unknown model 'é'")
    fields, _ = Decoder().decode(block)
    assert fields == [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", b"5"),
                      (b"grpc-message", b"unknown model '%C3%A9'")]
    assert Decoder().decode(W.TRAILERS_OK)[0] == [(b"grpc-status", b"0")]


def req(*extra, method=b"POST", ctype=b"application/grpc", path=b"/inference.GRPCInferenceService/ServerLive"):
    return [(b":method", method), (b":scheme", b"http"), (b":path", path), (b":authority", b"x"),
            (b"content-type", ctype), *extra]


def test_request_heads():
    h = W.parse_head(req((b"grpc-timeout", b"5S"), (b"grpc-encoding", b"gzip"), (b"authorization", b"Bearer k"),
                         (b"te", b"trailers"), (b"user-agent", b"grpc-c++/1.6")), False, 16384)
    assert h.error is None and h.timeout == 5.0 and h.encoding == b"gzip" and h.authorization == b"Bearer k"
    assert W.parse_head(req(ctype=b"application/grpc+proto"), False, 16384).error is None
    assert W.parse_head(req(method=b"GET"), False, 16384).error[:2] == (W.HTTP, 405)
    assert W.parse_head(req(ctype=b"application/grpc-web"), False, 16384).error[:2] == (W.HTTP, 415)
    assert W.parse_head(req(ctype=b"text/plain"), False, 16384).error[:2] == (W.HTTP, 415)
    assert W.parse_head(req((b"grpc-timeout", b"soon")), False, 16384).error[:2] == (W.GRPC, 3)
    assert W.parse_head([], True, 16384).error[:2] == (W.GRPC, 8)
    for bad in (req((b":path", b"/again")), req((b"Upper", b"x")), req((b"connection", b"close")),
                req((b"te", b"gzip")), [(b":method", b"POST")], req()[1:] + [(b":method", b"POST")],
                req((b":status", b"200"))):
        assert W.parse_head(bad, False, 16384).error[0] == W.RST, bad


def test_decompress():
    body = b"tensor bytes " * 100
    assert W.decompress(b"gzip", gzip.compress(body), 10_000) == body
    assert W.decompress(b"deflate", zlib.compress(body), 10_000) == body
    with pytest.raises(ValueError) as e:
        W.decompress(b"gzip", gzip.compress(body), 100)  # a bomb: larger than allowed once inflated
    assert e.value.args[0] == 8
    with pytest.raises(ValueError) as e:
        W.decompress(b"snappy", body, 10_000)
    assert e.value.args[0] == 12
    with pytest.raises(ValueError) as e:
        W.decompress(None, body, 10_000)
    assert e.value.args[0] == 13
    with pytest.raises(ValueError) as e:
        W.decompress(b"gzip", b"not gzip", 10_000)
    assert e.value.args[0] == 13
