"""Triton's model-repository extension at the front: HTTP index / load / unload and the gRPC RPCs reach
``Service.repository_index(ready_only)``, ``Service.load_model(name, params)`` and ``Service.unload_model(name,
params)``; their errors come back with the error's status. (What load and unload do is the repository's business and
tested with it; here the Service's methods are replaced by recorders.)"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request

import pytest
from server_doubles import make_model

th = pytest.importorskip("tritonclient.http")
tg = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

from xinfer_sdk.errors import ModelNotFound  # noqa: E402


@pytest.fixture(scope="module", params=["native", "grpcio"])
def srv(request):
    from xinfer_sdk.server.runner import Server

    s = Server([make_model()], port=0, grpc_port=0, gpu_metrics=False, drain_timeout=5,
               grpc_impl=request.param).start_background()
    s.calls = []
    s.release = threading.Event()
    s.release.set()

    async def load_model(name, params=None):
        s.calls.append(("load", name, dict(params or {}), threading.current_thread().name))
        while not s.release.is_set():
            await asyncio.sleep(0.01)
        if name == "missing":
            raise ModelNotFound(f"no model {name!r} in the repository")

    async def unload_model(name, params=None):
        s.calls.append(("unload", name, dict(params or {}), threading.current_thread().name))

    s.service.load_model = load_model
    s.service.unload_model = unload_model
    yield s
    s.stop()


def _post(srv, path, body=b""):
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}{path}", body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()


def test_http_index_all_and_ready_only(srv):
    status, body = _post(srv, "/v2/repository/index")
    assert status == 200 and [m["name"] for m in json.loads(body)] == ["dbl"]
    status, body = _post(srv, "/v2/repository/index", b'{"ready": true}')
    assert [m["state"] for m in json.loads(body)] == ["READY"]


def test_http_index_ready_must_be_a_bool(srv):
    with pytest.raises(urllib.error.HTTPError) as ei:
        _post(srv, "/v2/repository/index", b'{"ready": "yes"}')
    assert ei.value.code == 400 and "'ready'" in json.loads(ei.value.read())["error"]


def test_http_load_and_unload_reach_the_service_with_their_parameters(srv):
    srv.calls.clear()
    c = th.InferenceServerClient(f"127.0.0.1:{srv.port}")
    c.load_model("dbl", config='{"max_batch_size": 4}')
    c.unload_model("dbl")
    assert [(a, n) for a, n, *_ in srv.calls] == [("load", "dbl"), ("unload", "dbl")]
    assert srv.calls[0][2] == {"config": '{"max_batch_size": 4}'}
    assert srv.calls[1][2] == {"unload_dependents": False}


def test_http_load_error_keeps_its_status(srv):
    with pytest.raises(urllib.error.HTTPError) as ei:
        _post(srv, "/v2/repository/models/missing/load")
    assert ei.value.code == 404 and "'missing'" in json.loads(ei.value.read())["error"]


def test_http_repository_endpoints_take_post_only(srv):
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/v2/repository/models/dbl/load", timeout=10)
    assert ei.value.code == 405


def test_a_slow_load_does_not_hold_inference(srv):
    """While a load is in progress, the same server answers inference requests."""
    srv.release.clear()
    c = th.InferenceServerClient(f"127.0.0.1:{srv.port}")
    t = threading.Thread(target=c.load_model, args=("dbl",), daemon=True)
    t.start()
    try:
        body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
        status, _ = _post(srv, "/v2/models/dbl/infer", body.encode())
        assert status == 200 and t.is_alive()
    finally:
        srv.release.set()
        t.join(10)
    assert not t.is_alive()


def test_grpc_index_load_unload(srv):
    srv.calls.clear()
    c = tg.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    assert [m.name for m in c.get_model_repository_index().models] == ["dbl"]
    c.load_model("dbl", config='{"max_batch_size": 4}')
    c.unload_model("dbl")
    assert [(a, n) for a, n, *_ in srv.calls] == [("load", "dbl"), ("unload", "dbl")]
    assert srv.calls[0][2] == {"config": '{"max_batch_size": 4}'}


def test_grpc_load_error_maps_to_not_found(srv):
    c = tg.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    with pytest.raises(InferenceServerException) as ei:
        c.load_model("missing")
    assert "NOT_FOUND" in str(ei.value.status()) and "'missing'" in ei.value.message()
