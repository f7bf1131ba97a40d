"""`doctor`'s GPU-stack rules (pure functions of the facts it gathers) and the no-device explanation (review D3)."""

from __future__ import annotations

from xinfer_sdk.accel.nvidia._cudart import explain_no_device
from xinfer_sdk.doctor import ort_cuda_major, stack_problems, tensorrt_cuda_major

R535 = {"driver": "535.183.01", "driver_cuda": 12020}
R580 = {"driver": "580.65.06", "driver_cuda": 13000}


def facts(**kw):
    base = {"driver": None, "driver_cuda": None, "cuda_runtime": None, "cuda_python": None, "cuda_devices": None,
            "cuda_reason": None, "tensorrt": None, "tensorrt_cuda": None, "onnxruntime": None,
            "onnxruntime_cuda": None, "jetson": None}
    base.update(kw)
    return base


def test_the_default_cuda12_stack_on_r535_is_clean():
    f = facts(**R535, cuda_python="12.9.10", cuda_runtime=12090, cuda_devices=1, tensorrt="10.16.1.11",
              tensorrt_cuda=12, onnxruntime="1.26.0", onnxruntime_cuda=12)
    assert stack_problems(f) == []


def test_cuda13_packages_on_an_r535_driver_each_get_their_fix():
    """What an unpinned `pip install 'xinfer-sdk[tensorrt]'` used to install on a common datacenter node."""
    f = facts(**R535, cuda_python="13.5.0", cuda_runtime=13050, cuda_devices=0,
              cuda_reason="driver too old for cuda-python 13.5.0 (...) (cudaErrorInsufficientDriver)",
              tensorrt="11.4.0.106", tensorrt_cuda=13, onnxruntime="1.31.1", onnxruntime_cuda=13)
    found = stack_problems(f)
    assert len(found) == 3, found  # the no-device reason is the cuda-python line, not a fourth one
    cp, trt, ort = found
    assert cp.startswith("cuda-python 13.5.0 needs a CUDA 13 driver but driver 535.183.01 supports CUDA 12.2")
    assert "pip install 'cuda-python>=12.6.1,<13'" in cp and "R580+" in cp
    assert trt.startswith("tensorrt-cu13 11.4.0.106 needs a CUDA 13 driver") and "'tensorrt-cu12>=10,<11'" in trt
    assert ort.startswith("onnxruntime-gpu 1.31.1 (CUDA 13 build) needs a CUDA 13 driver")
    assert "'onnxruntime-gpu>=1.19,<1.27'" in ort


def test_cuda13_stack_on_r580_is_clean_and_mixed_majors_without_a_driver_are_flagged():
    f = facts(**R580, cuda_python="13.5.0", tensorrt="11.4.0.106", tensorrt_cuda=13, onnxruntime_cuda=13,
              onnxruntime="1.31.1", cuda_devices=1)
    assert stack_problems(f) == []
    mixed = facts(cuda_python="13.5.0", tensorrt="10.16.1.11", tensorrt_cuda=12)  # a build box, no driver
    (msg,) = stack_problems(mixed)
    assert "two CUDA majors" in msg and "cuda-python 13.5.0 (CUDA 13)" in msg and "tensorrt-cu12" in msg


def test_tensorrt_11_on_jetpack_6_is_refused_with_the_fix():
    f = facts(driver_cuda=12060, cuda_python="12.6.2", tensorrt="11.4.0.106",
              jetson={"model": "NVIDIA Jetson AGX Orin Developer Kit", "soc": "tegra234", "l4t": "36.4.3"})
    (msg,) = stack_problems(f)
    assert "TensorRT 11.4.0.106 on a Jetson with L4T 36.4.3" in msg and "python3-libnvinfer" in msg
    f["tensorrt"] = "10.3.0"
    assert stack_problems(f) == []


def test_a_gpu_the_driver_sees_but_cuda_does_not_is_reported():
    f = facts(**R580, cuda_python="12.9.10", cuda_devices=0,
              cuda_reason="no CUDA device is visible (cudaErrorNoDevice): no GPU, or CUDA_VISIBLE_DEVICES hides them")
    (msg,) = stack_problems(f)
    assert msg.startswith("cuda-python finds no GPU: no CUDA device is visible (cudaErrorNoDevice)")


def test_package_cuda_majors():
    assert ort_cuda_major("onnxruntime-gpu", "1.26.0") == 12  # PyPI wheels: nvidia-*-cu12 up to 1.26
    assert ort_cuda_major("onnxruntime-gpu", "1.27.0") == 13  # and CUDA 13 from 1.27
    assert ort_cuda_major("onnxruntime-gpu", "1.18.1") == 11
    assert ort_cuda_major("onnxruntime", "1.32.0") is None  # CPU build
    assert ort_cuda_major("onnxruntime-gpu", "1.31.1", built_with="12.8") == 12  # a self-built wheel says so
    assert tensorrt_cuda_major({"tensorrt-cu13": "11.4.0.106", "tensorrt": "11.4.0.106"}) == 13
    assert tensorrt_cuda_major({"tensorrt": "10.3.0"}) is None  # JetPack's, from apt


def test_no_device_explanations_name_the_cuda_error():
    assert explain_no_device("cudaErrorInsufficientDriver", 12020, 13050, "13.5.0") == (
        "driver too old for cuda-python 13.5.0 (needs CUDA 13.x, the driver supports CUDA 12.2) "
        "(cudaErrorInsufficientDriver); pip install 'cuda-python>=12.6.1,<13' (the [tensorrt]/[gpu] extras pin it) "
        "or upgrade the driver to R580+")
    assert "no NVIDIA driver is loaded (cudaErrorInsufficientDriver)" in \
        explain_no_device("cudaErrorInsufficientDriver", 0, 12090, "12.9.10")
    assert "(cudaErrorNoDevice)" in explain_no_device("cudaErrorNoDevice", 12020, 12090)
    assert explain_no_device("cudaErrorUnknown", 12020, 12090) == "CUDA reports no usable device (cudaErrorUnknown)"
