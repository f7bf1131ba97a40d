"""Issue 18 item 15d: ``bench --url`` against a server that goes away stops with one clear line (exit 2) instead
of firing refused connections until the duration is over."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

pytest.importorskip("httptools")

META = json.dumps({"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]}).encode()


class _Vanishing(http.server.BaseHTTPRequestHandler):
    """Answers the model metadata, then closes its listening socket at the first inference request."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(META)))
        self.end_headers()
        self.wfile.write(META)

    def do_POST(self):
        self.close_connection = True
        threading.Thread(target=self.server.vanish, daemon=True).start()


class _Server(http.server.ThreadingHTTPServer):
    def vanish(self):
        self.shutdown()
        self.server_close()


def test_bench_stops_when_its_server_is_gone(cli_run):
    srv = _Server(("127.0.0.1", 0), _Vanishing)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    t0 = time.perf_counter()
    code, out, err = cli_run("bench", "--url", url, "--model", "m", "--concurrency", "4", "--duration", "30s")
    assert time.perf_counter() - t0 < 15  # the bug: 30 s of refused connections (x 60k/s)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert f"the server at {url} stopped answering (connection failed" in lines[0] and "stopping" in lines[0]
