"""Request-level KServe v2 parameters reach ``Service.submit(..., params=...)`` as a plain dict, from HTTP JSON and
from gRPC's InferParameter map; a value of the wrong type is refused naming the parameter."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from server_doubles import make_model, x

th = pytest.importorskip("tritonclient.http")
tg = pytest.importorskip("tritonclient.grpc")


@pytest.fixture(scope="module")
def srv():
    from xinfer_sdk.server.runner import Server

    s = Server([make_model()], port=0, grpc_port=0, gpu_metrics=False, drain_timeout=5).start_background()
    seen = []
    submit = s.service.submit

    def spy(served, inputs, timeout, loop, held=0, params=None):
        seen.append(params)
        return submit(served, inputs, timeout, loop, held=held, params=params)

    s.service.submit = spy
    s.seen = seen
    yield s
    s.stop()


def _client(srv, proto):
    if proto == "http":
        c = th.InferenceServerClient(f"127.0.0.1:{srv.port}")
    else:
        c = tg.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    c.mod = th if proto == "http" else tg
    return c


def _input(mod):
    i = mod.InferInput("x", [1, 4], "FP32")
    i.set_data_from_numpy(x())
    return i


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_sequence_parameters_reach_submit(srv, proto):
    c = _client(srv, proto)
    srv.seen.clear()
    r = c.infer("dbl", [_input(c.mod)], sequence_id=7, sequence_start=True, sequence_end=False)
    np.testing.assert_array_equal(r.as_numpy("y"), x() * 2)
    params = srv.seen[-1]
    assert params["sequence_id"] == 7 and params["sequence_start"] is True and params["sequence_end"] is False


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_custom_parameters_reach_submit(srv, proto):
    c = _client(srv, proto)
    srv.seen.clear()
    c.infer("dbl", [_input(c.mod)], parameters={"tenant": "a", "boost": 3})
    assert srv.seen[-1]["tenant"] == "a" and srv.seen[-1]["boost"] == 3


def test_a_request_without_parameters_passes_none(srv):
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
    srv.seen.clear()
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{srv.port}/v2/models/dbl/infer",
                                                       body.encode(), method="POST"), timeout=10) as r:
        assert r.status == 200
    assert srv.seen == [None]


@pytest.mark.parametrize("key, value", [("sequence_start", "yes"), ("sequence_id", 1.5), ("sequence_id", -3),
                                        ("sequence_end", 1), ("priority", True), ("custom", {"a": 1}),
                                        ("custom", [1, 2])])
def test_http_wrong_parameter_type_is_400_naming_it(srv, key, value):
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}],
                       "parameters": {key: value}})
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/v2/models/dbl/infer", body.encode(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=10)
    assert ei.value.code == 400
    assert repr(key) in json.loads(ei.value.read())["error"]


def test_grpc_wrong_parameter_type_is_invalid_argument_naming_it(srv):
    """tritonclient refuses reserved names in ``parameters`` itself, so the request is built by hand."""
    import grpc

    from xinfer_sdk.server._proto import grpc_service_pb2 as pb

    req = pb.ModelInferRequest(model_name="dbl", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=[1, 4])], raw_input_contents=[x().tobytes()])
    req.parameters["sequence_start"].string_param = "yes"
    with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as ch:
        call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                              request_serializer=pb.ModelInferRequest.SerializeToString,
                              response_deserializer=pb.ModelInferResponse.FromString)
        with pytest.raises(grpc.RpcError) as ei:
            call(req, timeout=10)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'sequence_start'" in ei.value.details()


def test_request_params_unit():
    from xinfer_sdk.errors import InvalidInput
    from xinfer_sdk.server.codec import request_params

    assert request_params({}) is None
    assert request_params({"sequence_id": "corr-1", "sequence_start": True, "x": 0.5}) == {
        "sequence_id": "corr-1", "sequence_start": True, "x": 0.5}
    with pytest.raises(InvalidInput, match="'timeout'"):
        request_params({"timeout": "soon"})
