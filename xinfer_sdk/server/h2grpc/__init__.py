"""A native gRPC endpoint: HTTP/2 (RFC 9113) and HPACK (RFC 7541) written for gRPC's unary and streaming
calls, on the server's asyncio event loop (``xinfer-sdk serve --grpc-impl native``, the default).

    huffman.py     HPACK's Huffman code and a table-driven decoder
    hpack.py       header block decoder (dynamic table) and the stateless encoder pieces
    frames.py      frame layout, constants, error codes, builders
    stream.py      per-connection limits, one stream's state
    connection.py  one HTTP/2 connection, reading: preface, frames, streams, our windows, errors
    output.py      ... writing: coalesced writes, the client's windows, stream and connection endings
    control.py     ... control frames: WINDOW_UPDATE, PING, SETTINGS, RST_STREAM, GOAWAY
    guard.py       ... flood counters, timeouts, the drain's two-step GOAWAY, the per-read work budget
    grpcwire.py    gRPC's wire format: request headers, messages, compression, status trailers
    calls.py       the RPCs of inference.GRPCInferenceService on those streams
    server.py      the listener (connection cap), the timer sweep, drain and graceful stop (GOAWAY)
"""

from .server import NativeGrpcServer

__all__ = ["NativeGrpcServer"]
