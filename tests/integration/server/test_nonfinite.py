"""NaN / Inf in float inputs: accepted by default (as Triton; perf_analyzer's random data holds them), refused
with a 400 naming the input under reject_nonfinite / --reject-nonfinite (issue 14, item 4)."""

from __future__ import annotations

import json
import struct
import urllib.error
import urllib.request

import pytest

NAN_JSON = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,8],"data":[NaN,0,0,0,0,0,0,0]}]}'


def _server(model_files, **kw):
    import xinfer_sdk as xs
    from xinfer_sdk.server.runner import Server

    m = xs.load(model_files["mlp"], profile="cpu", name="mlp", threads=1, batching={"max_batch_delay": "0ms"})
    return Server([m], port=0, grpc_port=None, gpu_metrics=False, drain_timeout=5, **kw).start_background()


def _post(port, body, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/mlp/infer", data=body,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _binary_inf():
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8],
                                     "parameters": {"binary_data_size": 32}}]}).encode()
    return header + struct.pack("<8f", float("inf"), *[0.0] * 7), {"Inference-Header-Content-Length":
                                                                    str(len(header))}


def test_nan_is_accepted_by_default(model_files):
    srv = _server(model_files)
    try:
        status, body = _post(srv.port, NAN_JSON)
        assert status == 200, body
        status, body = _post(srv.port, *_binary_inf())
        assert status == 200, body
    finally:
        srv.stop()


@pytest.mark.parametrize("kind", ["json", "binary"])
def test_reject_nonfinite_answers_400_naming_the_input(model_files, kind):
    srv = _server(model_files, reject_nonfinite=True)
    try:
        status, body = _post(srv.port, NAN_JSON) if kind == "json" else _post(srv.port, *_binary_inf())
    finally:
        srv.stop()
    assert status == 400 and b"'input'" in body and b"NaN or Inf" in body


def test_allow_nonfinite_is_a_deprecated_no_op(model_files, caplog):
    srv = _server(model_files, allow_nonfinite=True)
    try:
        assert srv.service.finite is False
    finally:
        srv.stop()
    assert "deprecated" in caplog.text and "--reject-nonfinite" in caplog.text
