"""Issue 18 item 7: ``xs.load("model.pt")`` without example shapes names the xs.load argument to pass
(not the CLI's --shapes / --dtype / --calib), and that argument works."""

from __future__ import annotations

import pytest

from xinfer_sdk.errors import UserError

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture
def model_pt(tmp_path, monkeypatch):
    monkeypatch.setenv("XINFER_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    m = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()))
    m.save(str(tmp_path / "model.pt"))
    return tmp_path / "model.pt"


def test_the_error_names_the_load_argument_not_cli_flags(model_pt):
    import xinfer_sdk as xs

    with pytest.raises(UserError) as info:
        xs.load(model_pt, profile="cpu")
    msg = str(info.value)
    assert "xs.load" in msg and "shapes={" in msg and "dtypes={" in msg
    assert "--shapes" not in msg and "--dtype" not in msg and "--calib" not in msg


def test_shapes_given_to_load_build_and_run_it(model_pt):
    import numpy as np

    import xinfer_sdk as xs

    with xs.load(model_pt, profile="cpu", shapes={"input": "1x8..4x8..16x8"}, warmup=False) as m:
        x = np.ones((3, 8), np.float32)
        out = next(iter(m.infer({"input": x}).values()))
        assert out.shape == (3, 4)


def test_shapes_for_a_bundle_or_onnx_file_are_refused_not_ignored(tmp_path):
    from onnx_models import make_mlp_onnx

    import xinfer_sdk as xs

    make_mlp_onnx(tmp_path / "mlp.onnx")
    with pytest.raises(UserError, match=r"shapes= only apply when xs.load builds"):
        xs.load(tmp_path / "mlp.onnx", profile="cpu", shapes={"input": "1x8"})
