"""Issue 18 item 4: a backend that cannot run says the real reason, and names a pip extra only when a
missing package is the reason."""

from __future__ import annotations

import pytest

from xinfer_sdk.errors import BackendUnavailable
from xinfer_sdk.profiles import load_profile
from xinfer_sdk.runtime.backends.select import choose


@pytest.fixture
def bundle(tmp_path):
    pytest.importorskip("onnxruntime")
    from onnx_models import make_mlp_onnx

    from xinfer_sdk.runtime.loader import bundle_from_onnx

    make_mlp_onnx(tmp_path / "mlp.onnx")
    return bundle_from_onnx(tmp_path / "mlp.onnx")


def test_tensorrt_on_a_cpu_device_says_the_device_is_the_problem(bundle):
    with pytest.raises(BackendUnavailable) as info:
        choose(bundle, load_profile("cpu"), "cpu", "tensorrt")
    msg = str(info.value)
    assert "runs on cuda devices, not cpu" in msg and "device='cuda'" in msg
    assert "pip install" not in msg and info.value.hint is None


def test_torch_installed_but_an_onnx_bundle_names_the_real_reason(bundle):
    with pytest.raises(BackendUnavailable) as info:
        choose(bundle, load_profile("cpu"), "cpu", "torch")
    msg = str(info.value)
    assert "no TorchScript" in msg and "xinfer-sdk[torch]" not in msg


def test_a_cuda_device_without_a_gpu_stack_never_says_install_cpu(bundle):
    from xinfer_sdk.runtime.backends.onnxruntime import OnnxRuntimeBackend

    if OnnxRuntimeBackend.unavailable_reason(bundle, load_profile("cpu"), "cuda:0") is None:
        pytest.skip("a working CUDA provider here: the cuda device is usable")
    with pytest.raises(BackendUnavailable) as info:
        choose(bundle, load_profile("cpu"), "cuda:0")
    msg = str(info.value)
    assert "xinfer-sdk[cpu]" not in msg and "xinfer-sdk[gpu]" in msg


def test_a_cpu_run_with_nothing_usable_still_names_the_cpu_extra(bundle):
    # every backend refused (as when onnxruntime is not installed): the [cpu] extra is the fix
    gone = {"onnxruntime": "onnxruntime is not importable", "torch": "x", "tensorrt": "x", "migraphx": "x"}
    with pytest.raises(BackendUnavailable) as info:
        choose(bundle, load_profile("cpu"), "cpu", exclude=gone)
    assert info.value.hint == "install it with: pip install 'xinfer-sdk[cpu]'"
