"""Issue 18 item 3: an unknown device is refused with one line (value, what is accepted, nearest spelling);
'gpu' means a GPU, never a silent CPU run, and what the model reports is the normalised device."""

from __future__ import annotations

import pytest

from xinfer_sdk.errors import BackendUnavailable, UserError
from xinfer_sdk.runtime.backends.base import normalize_device


@pytest.mark.parametrize("bad,nearest", [("tpu", "cuda:0"), ("tpu:1", "cuda:1"), ("rocm1", "rocm:1"),
                                         ("cpuu", "cpu"), ("GPU 2", "cuda:2"), ("amd", "rocm:0")])
def test_an_unknown_device_names_the_value_the_accepted_ones_and_the_nearest(bad, nearest):
    with pytest.raises(UserError) as info:
        normalize_device(bad)
    msg = str(info.value)
    assert "\n" not in msg and repr(bad) in msg and "'cpu', 'cuda' or 'cuda:N'" in msg
    assert msg.endswith(f"did you mean {nearest!r}?")


def test_nothing_close_gives_no_suggestion():
    with pytest.raises(UserError) as info:
        normalize_device("mps")
    assert "did you mean" not in str(info.value)


@pytest.fixture
def mlp_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    from onnx_models import make_mlp_onnx

    make_mlp_onnx(tmp_path / "mlp.onnx")
    return tmp_path / "mlp.onnx"


def test_load_refuses_an_unknown_device_before_opening_anything(tmp_path):
    import xinfer_sdk as xs

    # the path does not exist: the device is checked first, so the error is about the device
    with pytest.raises(UserError, match=r"device 'tpu' is not understood.*did you mean"):
        xs.load(tmp_path / "missing.pt", device="tpu", profile="cpu")


def test_gpu_is_a_gpu_never_a_silent_cpu_run(mlp_onnx):
    import xinfer_sdk as xs

    try:
        m = xs.load(mlp_onnx, device="gpu", profile="cpu", warmup=False)
    except BackendUnavailable as exc:  # no GPU stack here: refused, naming the normalised device
        assert "on cuda:0" in exc.message
        return
    try:  # a GPU machine: it runs there and says so
        assert m.device == "cuda:0" and m.describe()["device"] == "cuda:0"
    finally:
        m.close()
