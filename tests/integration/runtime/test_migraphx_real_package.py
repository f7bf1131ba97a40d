"""The migraphx backend against the real onnxruntime-migraphx package, where it is installed.

CI installs the CPU onnxruntime, so these skip there. With onnxruntime-migraphx on a machine without ROCm (how
they were run while writing them: onnxruntime-migraphx 1.27.1, x86-64, no GPU) the provider is listed, cannot
load ``libmigraphx_c.so.3`` and ONNX Runtime quietly retries on the CPU: the backend must say so and refuse.
On a ROCm machine with an AMD GPU the last test runs the model there. None of this has run on AMD hardware yet.
"""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
if "MIGraphXExecutionProvider" not in ort.get_available_providers():
    pytest.skip("onnxruntime-migraphx is not installed (this onnxruntime lists "
                f"{ort.get_available_providers()})", allow_module_level=True)

from xinfer_sdk.accel.amd.migraphx_options import PROVIDER  # noqa: E402
from xinfer_sdk.errors import BackendUnavailable  # noqa: E402
from xinfer_sdk.profiles import load_profile  # noqa: E402
from xinfer_sdk.runtime.backends import migraphx as mgx  # noqa: E402


@pytest.fixture
def bundle(tmp_path):
    from onnx_models import make_mlp_onnx

    from xinfer_sdk.runtime.loader import bundle_from_onnx

    make_mlp_onnx(tmp_path / "mlp.onnx")
    return bundle_from_onnx(tmp_path / "mlp.onnx")


def _works() -> bool:
    mgx._provider_report.cache_clear()
    return PROVIDER in mgx._provider_report().get("working", ())


def test_without_rocm_the_backend_says_why_and_never_runs_on_the_cpu(bundle):
    if _works():
        pytest.skip("the MIGraphX provider starts here (ROCm and an AMD GPU present)")
    why = mgx.MIGraphXBackend.unavailable_reason(bundle, load_profile("mi300x"), "rocm:0")
    assert why and "installed but did not start" in why
    be = mgx.MIGraphXBackend(bundle, profile=load_profile("mi300x"), device="rocm:0")
    with pytest.raises(BackendUnavailable, match=r"MIGraphXExecutionProvider did not start for rocm:0"):
        be.activate()  # the real ONNX Runtime falls back to the CPU inside InferenceSession; we refuse it
    import xinfer_sdk

    with pytest.raises(BackendUnavailable, match="installed but did not start"):
        xinfer_sdk.load(bundle, profile="mi300x", device="rocm:0", warmup=False)


def test_on_an_amd_gpu_the_model_runs_there(bundle):
    if not _works():
        pytest.skip("no working MIGraphX provider here (needs ROCm with MIGraphX and an AMD GPU)")
    import xinfer_sdk

    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    ref = ort.InferenceSession(str(bundle.model_file), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with xinfer_sdk.load(bundle, profile="mi300x", device="rocm:0") as model:
        d = model.describe()
        out = model.infer({"input": x})["output"]
    assert d["backend"] == "migraphx" and d["device"] == "rocm:0"
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3)
