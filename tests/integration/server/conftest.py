"""A real server (ONNX Runtime) with two tiny models, shared by the module's tests."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("httptools")
pytest.importorskip("grpc")

from onnx_models import make_mlp_onnx, make_types_onnx  # noqa: E402


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("server-models")
    ref = make_mlp_onnx(d / "mlp.onnx")
    make_types_onnx(d / "types.onnx")
    return {"mlp": d / "mlp.onnx", "types": d / "types.onnx", "mlp_ref": ref, "dir": d}


@pytest.fixture(scope="module")
def server(model_files):
    """HTTP + gRPC on free ports, models 'mlp' and 'types'."""
    import xinfer_sdk as xs
    from xinfer_sdk.server.runner import Server

    models = [xs.load(model_files["mlp"], profile="cpu", name="mlp", threads=1,
                      batching={"max_batch_delay": "0ms", "max_batch_size": 8}),
              xs.load(model_files["types"], profile="cpu", name="types", threads=1,
                      batching={"max_batch_delay": "0ms", "max_batch_size": 8})]
    srv = Server(models, port=0, grpc_port=0, gpu_metrics=False, drain_timeout=5, max_body=1 << 20)
    srv.start_background()
    srv.mlp_ref = model_files["mlp_ref"]
    yield srv
    srv.stop()
