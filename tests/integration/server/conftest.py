"""A real server (ONNX Runtime) with two tiny models, shared by the module's tests; the same models behind each
gRPC transport (``grpc_server``: native and grpcio); Triton's perf_analyzer, fetched once."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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


def _start(model_files, grpc_impl):
    import xinfer_sdk as xs
    from xinfer_sdk.server.runner import Server

    models = [xs.load(model_files["mlp"], profile="cpu", name="mlp", threads=1,
                      batching={"max_batch_delay": "0ms", "max_batch_size": 8}),
              xs.load(model_files["types"], profile="cpu", name="types", threads=1,
                      batching={"max_batch_delay": "0ms", "max_batch_size": 8})]
    srv = Server(models, port=0, grpc_port=0, gpu_metrics=False, drain_timeout=5, max_body=1 << 20,
                 grpc_impl=grpc_impl)
    srv.start_background()
    srv.mlp_ref = model_files["mlp_ref"]
    return srv


@pytest.fixture(scope="module")
def server(model_files):
    """HTTP + gRPC (the default, native transport) on free ports, models 'mlp' and 'types'."""
    srv = _start(model_files, "native")
    yield srv
    srv.stop()


@pytest.fixture(scope="module", params=["native", "grpcio"])
def grpc_server(request, model_files):
    """The same server once per gRPC transport (native reuses ``server``)."""
    if request.param == "native":
        yield request.getfixturevalue("server")
        return
    srv = _start(model_files, request.param)
    yield srv
    srv.stop()


PA_DIR = Path(os.environ.get("XINFER_PERF_ANALYZER_DIR") or
              Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "xinfer-sdk" / "perf_analyzer")


@pytest.fixture(scope="session")
def perf_analyzer():
    exe = PA_DIR / "perf_analyzer"
    if not exe.exists():
        script = Path(__file__).resolve().parent / "setup_perf_analyzer.sh"
        p = subprocess.run(["bash", str(script), os.environ.get("PYTHON", "python3")],
                           capture_output=True, text=True, timeout=600)
        if p.returncode != 0 or not exe.exists():
            pytest.skip("perf_analyzer could not be fetched (tritonclient==2.51.0 wheel + libb64 + libcudart): "
                        + (p.stderr or p.stdout).strip()[-300:])
    return str(exe)
