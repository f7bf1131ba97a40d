"""A raw-socket HTTP/2 client for the native gRPC endpoint's protocol tests: it sends exactly the frames a test
asks for (valid or not) and reads the server's frames back. Header blocks are plain HPACK literals; the
server's blocks are decoded with the (separately RFC-tested) decoder."""

from __future__ import annotations

import socket
import struct
import time

from xinfer_sdk.server.h2grpc import frames as F
from xinfer_sdk.server.h2grpc.hpack import Decoder, literal

PATH = "/inference.GRPCInferenceService/"


def grpc_message(body: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BI", int(compressed), len(body)) + body


def request_block(rpc: str, extra: dict | None = None, method: bytes = b"POST",
                  content_type: bytes = b"application/grpc") -> bytes:
    hdrs = [(b":method", method), (b":scheme", b"http"), (b":path", (PATH + rpc).encode()),
            (b":authority", b"localhost"), (b"content-type", content_type), (b"te", b"trailers")]
    hdrs += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    return b"".join(literal(k, v) for k, v in hdrs)


class Response:
    def __init__(self):
        self.headers: list[tuple[bytes, bytes]] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        self.data = b""
        self.reset: int | None = None
        self.ended = False

    def header(self, name: str) -> str | None:
        for k, v in self.headers + self.trailers:
            if k == name.encode():
                return v.decode()
        return None

    @property
    def grpc_status(self) -> int | None:
        s = self.header("grpc-status")
        return None if s is None else int(s)

    def messages(self) -> list[bytes]:
        out, pos = [], 0
        while pos < len(self.data):
            n = struct.unpack_from(">I", self.data, pos + 1)[0]
            out.append(self.data[pos + 5:pos + 5 + n])
            pos += 5 + n
        return out


class RawH2:
    def __init__(self, port: int, settings: dict[int, int] | None = None, preface: bytes | None = F.PREFACE,
                 timeout: float = 10.0, auto_window: bool = True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.dec = Decoder(4096, 1 << 20)
        self.server_settings: dict[int, int] = {}
        self.goaway: tuple[int, int, bytes] | None = None
        self.window_updates: list[tuple[int, int]] = []
        self.pings: list[bytes] = []
        self.responses: dict[int, Response] = {}
        self.auto_window = auto_window  # give back the window for every DATA frame received
        self.closed = False
        self._cont: list | None = None
        if preface == F.PREFACE:
            self.send(preface + F.settings(settings or {}))
        elif preface is not None:  # a broken or hand-made start
            self.send(preface)

    # -- sending ------------------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self, ftype: int, flags: int, sid: int, payload: bytes = b"") -> None:
        self.send(F.frame(ftype, flags, sid, payload))

    def call(self, sid: int, rpc: str, body: bytes, extra: dict | None = None, end: bool = True) -> None:
        """HEADERS + DATA(one gRPC message, END_STREAM) in one send."""
        self.send(F.frame(F.HEADERS, F.END_HEADERS, sid, request_block(rpc, extra))
                  + F.frame(F.DATA, F.END_STREAM if end else 0, sid, grpc_message(body)))

    # -- reading ------------------------------------------------------------------------------------------
    def read_frame(self, timeout: float = 10.0):
        """(type, flags, sid, payload), or None when the server closed the connection."""
        deadline = time.time() + timeout
        while True:
            if len(self.buf) >= 9:
                lt, flags, sid = F.HEADER.unpack_from(self.buf, 0)
                n = lt >> 8
                if len(self.buf) >= 9 + n:
                    payload = self.buf[9:9 + n]
                    self.buf = self.buf[9 + n:]
                    fr = (lt & 0xFF, flags, sid & 0x7FFFFFFF, payload)
                    self._note(fr)
                    return fr
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no frame from the server in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                return None
            self.buf += chunk

    def _note(self, fr) -> None:
        ftype, flags, sid, payload = fr
        if ftype == F.SETTINGS and not flags & F.ACK:
            self.server_settings.update(F.parse_settings(payload))
            try:
                self.frame(F.SETTINGS, F.ACK, 0)
            except OSError:
                pass
        elif ftype == F.GOAWAY:
            self.goaway = (F.u32(payload) & 0x7FFFFFFF, F.u32(payload, 4), payload[8:])
        elif ftype == F.WINDOW_UPDATE:
            self.window_updates.append((sid, F.u32(payload)))
        elif ftype == F.PING:
            self.pings.append(payload)
        elif ftype == F.RST_STREAM:
            r = self.responses.setdefault(sid, Response())
            r.reset = F.u32(payload)
            r.ended = True
        elif ftype in (F.HEADERS, F.CONTINUATION):
            if ftype == F.HEADERS:
                self._cont = [sid, flags & F.END_STREAM, payload]
            else:
                self._cont[2] += payload
            if flags & F.END_HEADERS:
                sid, end, block = self._cont
                self._cont = None
                r = self.responses.setdefault(sid, Response())
                decoded, _ = self.dec.decode(block)
                if r.headers:
                    r.trailers = decoded
                else:
                    r.headers = decoded
                    if end:  # trailers-only
                        r.trailers = decoded
                if end:
                    r.ended = True
        elif ftype == F.DATA:
            r = self.responses.setdefault(sid, Response())
            r.data += payload
            if payload and self.auto_window:
                try:
                    self.send(F.window_update(0, len(payload)) + F.window_update(sid, len(payload)))
                except OSError:  # the server may close right after its last answer (GOAWAY)
                    pass
            if flags & F.END_STREAM:
                r.ended = True

    def response(self, sid: int, timeout: float = 10.0) -> Response:
        deadline = time.time() + timeout
        while not (sid in self.responses and self.responses[sid].ended):
            if self.read_frame(max(0.01, deadline - time.time())) is None:
                raise ConnectionError(f"connection closed before stream {sid} ended (GOAWAY {self.goaway})")
        return self.responses[sid]

    def until_closed(self, timeout: float = 10.0) -> None:
        deadline = time.time() + timeout
        while self.read_frame(max(0.01, deadline - time.time())) is not None:
            pass

    def close(self) -> None:
        self.sock.close()

    def __del__(self) -> None:  # tests that end on an assertion leave it to the collector
        sock = getattr(self, "sock", None)  # absent when the connect itself failed
        if sock is not None:
            sock.close()
