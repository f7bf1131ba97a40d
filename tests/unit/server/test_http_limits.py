"""HTTP/1.1 front end limits, in-process (docs/security.md, issue 19): each test attacks one limit of a real
``HttpServer`` on uvloop (as ``xinfer-sdk serve`` runs it) through a raw socket; the router is a test double that
answers at once (or later, for ``/later``) with the body length it received."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time

import pytest

from xinfer_sdk.server.http import MAX_HEADER_BYTES, MAX_URI_BYTES
from xinfer_sdk.server.http_server import HttpServer
from xinfer_sdk.server.http_wire import response
from xinfer_sdk.server.limits import RequestBudget, ServerLimits

MAX_BODY = 64 << 10


class EchoRouter:
    """Answers the body length at once; ``/later`` answers after 50 ms (an inference)."""

    def dispatch(self, conn, req):
        close = not req.keep_alive
        if req.path == "/later":
            slot = conn.begin()
            asyncio.get_running_loop().call_later(0.05, conn.finish, slot, response(200, b"later", close=close), close)
            return
        conn._answer(response(200, b"%d" % len(req.body), close=close), close)


class Srv:
    """An HttpServer on its own uvloop thread."""

    def __init__(self, max_body=MAX_BODY, budget=None, **limits):
        import uvloop

        self.http = HttpServer(EchoRouter(), max_body=max_body, limits=ServerLimits(**limits), budget=budget)
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = self.call(self.http.start("127.0.0.1", 0))

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self):
        self.call(self.http.close(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def srv():
    made = []

    def make(**kw):
        s = Srv(**kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def wait_for(cond, timeout=5.0):
    t = time.monotonic()
    while not cond():
        assert time.monotonic() - t < timeout, "condition not met in time"
        time.sleep(0.005)


def connect(port, timeout=5.0):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_all(s, limit=1 << 20):
    """Everything until the server closes (or the timeout); returns (data, closed)."""
    data = b""
    try:
        while len(data) < limit:
            chunk = s.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        return data, True
    except TimeoutError:
        return data, False
    return data, False


def answers(data):
    """The complete responses in ``data``: [(status, body)] (100 Continue skipped)."""
    out = []
    while b"\r\n\r\n" in data:
        head, rest = data.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        n = 0
        for line in head.split(b"\r\n")[1:]:
            if line.lower().startswith(b"content-length:"):
                n = int(line.split(b":", 1)[1])
        body, data = rest[:n], rest[n:]
        if status != 100:
            out.append((status, body))
    return out


def statuses(data):
    return [status for status, _ in answers(data)]


def exchange(port, raw):
    with connect(port) as s:
        s.sendall(raw)
        return read_all(s)


def send_until_answered(s, head, filler, limit):
    """Send ``head`` then ``filler`` repeatedly (at most ``limit`` bytes) until the server answers; returns
    (bytes sent, answer)."""
    s.sendall(head)
    sent = len(head)
    s.settimeout(0.01)
    answer = b""
    try:
        while sent < limit:
            try:
                answer += s.recv(65536)
                if answer:
                    break
            except TimeoutError:
                pass
            s.sendall(filler)
            sent += len(filler)
    except (ConnectionResetError, BrokenPipeError):
        pass
    s.settimeout(5)
    if b"\r\n\r\n" not in answer:
        try:
            answer += read_all(s)[0]
        except OSError:
            pass
    return sent, answer


GET = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"


# -- sizes (D6, D13d) --------------------------------------------------------------------------------------------
def test_an_unterminated_header_value_gets_431_early(srv):
    s = srv()
    with connect(s.port) as c:
        sent, answer = send_until_answered(c, b"GET /x HTTP/1.1\r\nHost: t\r\nX-Long: ", b"a" * 8192, 8 << 20)
    assert statuses(answer) == [431], answer[:200]
    assert b"Connection: close" in answer
    assert sent < 1 << 20  # the report streamed 48 MiB with no reaction


def test_an_unterminated_header_name_gets_431_early(srv):
    s = srv()
    with connect(s.port) as c:
        sent, answer = send_until_answered(c, b"GET /x HTTP/1.1\r\nHost: t\r\n", b"N" * 8192, 8 << 20)
    assert statuses(answer) == [431] and sent < 1 << 20


def test_too_large_complete_headers_get_431(srv):
    s = srv()
    many = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(MAX_HEADER_BYTES // 1000 + 2))
    data, closed = exchange(s.port, b"GET /x HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n")
    assert statuses(data) == [431] and closed


def test_a_too_long_uri_gets_414(srv):
    s = srv()
    data, closed = exchange(s.port, b"GET /" + b"a" * (MAX_URI_BYTES + 10) + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert statuses(data) == [414] and closed


def test_large_but_allowed_headers_are_served(srv):
    s = srv()
    data, _ = exchange(s.port, b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Big: " + b"v" * 40000 +
                       b"\r\n\r\n")
    assert statuses(data) == [200]


# -- request framing (D11, D13e, D13f) ---------------------------------------------------------------------------
@pytest.mark.parametrize("head", [b"GET /x HTTP/1.1\r\n\r\n", b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                                  b"GET /x HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"], ids=["none", "two", "two-1.0"])
def test_host_missing_or_twice_is_400(srv, head):
    data, closed = exchange(srv().port, head)
    assert statuses(data) == [400] and b"Host" in data and closed


def test_http_1_0_without_host_is_served(srv):
    data, _ = exchange(srv().port, b"GET /x HTTP/1.0\r\n\r\n")
    assert statuses(data) == [200]


def test_transfer_encoding_other_than_chunked_is_501(srv):
    data, closed = exchange(srv().port, b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity, chunked\r\n\r\n"
                                        b"3\r\nabc\r\n0\r\n\r\n")
    assert statuses(data) == [501] and closed


def test_a_second_gzip_member_is_400(srv):
    body = gzip.compress(b"a" * 10) + gzip.compress(b"b" * 10)
    data, _ = exchange(srv().port, b"POST /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Encoding: gzip\r\n"
                                   b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert statuses(data) == [400] and b"second gzip member" in data


def test_one_gzip_member_is_served(srv):
    body = gzip.compress(b"a" * 10)
    data, _ = exchange(srv().port, b"POST /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Encoding: gzip\r\n"
                                   b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert statuses(data) == [200] and data.endswith(b"\r\n\r\n10")


@pytest.mark.parametrize("upgrade", [b"websocket", b"h2c"])
def test_upgrade_is_ignored_and_answered_once(srv, upgrade):
    data, closed = exchange(srv().port, b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n"
                                        % upgrade)
    assert statuses(data) == [200] and closed  # the report saw 200 then 501


def test_connect_is_answered_405_once(srv):
    data, closed = exchange(srv().port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert statuses(data) == [405] and closed  # the report saw 404 then 501


def test_pipelined_answers_keep_their_order(srv):
    s = srv()
    reqs = b"".join(b"POST /%s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" %
                    (b"later" if i % 2 else b"x", i, b"z" * i) for i in range(20))
    with connect(s.port) as c:
        c.sendall(reqs + b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data, _ = read_all(c)
    bodies = [body for _, body in answers(data)]
    assert bodies == [b"later" if i % 2 else b"%d" % i for i in range(20)] + [b"0"]


# -- bodies (D8, D4) --------------------------------------------------------------------------------------------
def test_oversize_content_length_gets_413_before_the_body(srv):
    s = srv()
    with connect(s.port) as c:
        c.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (100 << 20))
        data, closed = read_all(c)
    assert statuses(data) == [413] and closed


def test_oversize_content_length_with_expect_gets_413_and_no_100(srv):
    s = srv()
    with connect(s.port) as c:
        c.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (100 << 20))
        data, closed = read_all(c)
    assert statuses(data) == [413] and closed


def test_good_request_with_expect_still_gets_100_continue(srv):
    s = srv()
    with connect(s.port) as c:
        c.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nConnection: close\r\nContent-Length: 3\r\n"
                  b"\r\n")
        assert c.recv(100).startswith(b"HTTP/1.1 100 Continue")
        c.sendall(b"abc")
        data, _ = read_all(c)
    assert statuses(data) == [200] and data.endswith(b"3")


def test_chunked_body_over_the_limit_gets_413_while_sending(srv):
    s = srv()
    chunk = b"%x\r\n%s\r\n" % (8192, b"c" * 8192)
    with connect(s.port) as c:
        sent, answer = send_until_answered(c, b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
                                           chunk, 64 << 20)
    assert statuses(answer) == [413]
    assert sent < MAX_BODY + (2 << 20)  # the report streamed 60 MiB past a 1 MiB limit


def test_request_bytes_over_the_server_budget_get_503_and_are_given_back(srv):
    budget = RequestBudget(1 << 20)
    s = srv(max_body=4 << 20, budget=budget)
    half = 600 << 10
    with connect(s.port) as a, connect(s.port) as b:
        a.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (half + 10) + b"a" * half)
        deadline = time.monotonic() + 5
        while budget.used < half and time.monotonic() < deadline:
            time.sleep(0.01)
        assert budget.used == half
        b.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % half + b"b" * half)
        data, closed = read_all(b)
        assert statuses(data) == [503] and b"--max-buffered" in data and closed
        a.sendall(b"a" * 10)
        a.settimeout(5)
        assert statuses(a.recv(1000)) == [200]
    deadline = time.monotonic() + 5
    while budget.used and time.monotonic() < deadline:
        time.sleep(0.01)
    assert budget.used == 0


# -- timeouts and the connection cap (D2) -----------------------------------------------------------------------
def test_slow_headers_get_408_after_the_header_timeout(srv):
    s = srv(header_timeout=0.5)
    with connect(s.port) as c:
        c.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\n")
        t = time.monotonic()
        for _ in range(20):  # slowloris: one byte every 0.1 s does not extend the deadline
            try:
                c.sendall(b"X")
            except OSError:
                break
            time.sleep(0.1)
        data, closed = read_all(c)
    assert statuses(data) == [408] and b"--header-timeout" in data and closed
    assert time.monotonic() - t < 2.5


def test_slow_body_gets_408_after_the_body_timeout(srv):
    s = srv(body_timeout=0.5)
    with connect(s.port) as c:
        c.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n")
        t = time.monotonic()
        for _ in range(20):
            try:
                c.sendall(b"X")
            except OSError:
                break
            time.sleep(0.1)
        data, closed = read_all(c)
    assert statuses(data) == [408] and b"--body-timeout" in data and closed
    assert time.monotonic() - t < 2.5


def test_idle_keep_alive_connection_is_closed_quietly(srv):
    s = srv(keepalive_timeout=0.5)
    with connect(s.port) as c:
        c.sendall(GET)
        t = time.monotonic()
        data, closed = read_all(c)
    assert statuses(data) == [200] and closed and 0.2 < time.monotonic() - t < 2.5


def test_a_connection_that_sends_nothing_is_closed_by_the_header_timeout(srv):
    s = srv(header_timeout=0.5, keepalive_timeout=60)
    with connect(s.port) as c:
        data, closed = read_all(c)
    assert data == b"" and closed
    assert not s.http.connections


def test_a_busy_connection_is_not_timed_out(srv):
    s = srv(keepalive_timeout=0.3, header_timeout=0.3)
    with connect(s.port) as c:
        for _ in range(5):  # keep-alive requests closer together than the timeout keep the connection
            c.sendall(GET)
            assert statuses(c.recv(1000)) == [200]
            time.sleep(0.1)


def test_connections_over_the_cap_get_503_and_others_are_served_after(srv):
    s = srv(max_connections=3, header_timeout=0.5)
    held = [connect(s.port) for _ in range(3)]
    try:
        time.sleep(0.1)
        data, closed = exchange(s.port, GET)
        assert statuses(data) == [503] and b"--max-connections" in data and closed
        data, closed = read_all(held[0])  # the idle ones are closed by the header timeout ...
        assert data == b"" and closed
        time.sleep(0.3)
        with connect(s.port) as c:  # ... and new clients are served again
            c.sendall(GET)
            assert statuses(c.recv(1000)) == [200]
    finally:
        for c in held:
            c.close()
    assert s.http.listener.refused == 1


# -- write backpressure (D1) -----------------------------------------------------------------------------------
def test_a_client_that_never_reads_stops_being_read(srv):
    s = srv(body_timeout=5)  # an answer not read for this long closes the connection (tested below)
    with connect(s.port) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.settimeout(0.05)
        flood = GET * 2000  # 58 KB of requests -> about 150 KB of answers per write
        sent = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                sent += c.send(flood)
            except TimeoutError:
                pass
            except OSError:
                break

        def buffered():
            return [(conn.transport.get_write_buffer_size(), len(conn._unread)) for conn in s.http.connections]

        held = asyncio.run_coroutine_threadsafe(_call(buffered), s.loop).result(5)
        assert held and all(out < 1 << 20 and unread < 1 << 20 for out, unread in held), held
        assert sent < 8 << 20  # the server stopped reading (the report's client sent 52.7 MB)
    deadline = time.monotonic() + 3
    while s.http.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not s.http.connections  # and what it held is freed


async def _call(fn):
    return fn()


def test_a_client_that_never_reads_is_closed_after_the_body_timeout(srv):
    s = srv(body_timeout=0.5)
    with socket.socket() as c:
        # a small receive buffer, set before connecting (shrinking it on an open loopback connection can stall the
        # peer's reads in uvloop until the header timeout: a different, bounded case)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(("127.0.0.1", s.port))
        c.settimeout(0.05)
        wait_for(lambda: s.http.connections)  # counted "closed" below only once it was open
        t = time.monotonic()
        closed = False
        while time.monotonic() - t < 8 and not closed:
            try:
                c.send(GET * 2000)
            except TimeoutError:
                pass
            except OSError:
                closed = True
            closed = closed or not s.http.connections
    assert closed and time.monotonic() - t < 6  # generous (shared CI cores); without the limit: never
