"""Real models for the build tests, made in-process (no downloads): the digits classifier trained on
scikit-learn's bundled data, the small transformer encoder, and synthetic ONNX graphs for edge cases."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]


def examples():
    spec = importlib.util.spec_from_file_location("xinfer_example_models", ROOT / "examples" / "models.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def models():
    pytest.importorskip("torch")
    return examples()


@pytest.fixture(scope="session")
def digits(models, tmp_path_factory):
    pytest.importorskip("sklearn")
    return models.digits_mlp(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def digits_cnn(models, tmp_path_factory):
    pytest.importorskip("sklearn")
    return models.digits_cnn(tmp_path_factory.mktemp("digits-cnn"))


@pytest.fixture(scope="session")
def transformer(models, tmp_path_factory):
    return models.transformer_onnx(tmp_path_factory.mktemp("transformer"))


@pytest.fixture(scope="session")
def conv_model(tmp_path_factory) -> Path:
    return conv_onnx(tmp_path_factory.mktemp("conv") / "conv.onnx")


def conv_onnx(path: Path, size: int = 2048, channels: int = 64) -> Path:
    """Conv 3 -> channels at size x size: tiny weights, huge activations (for the memory budget)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.RandomState(0).randn(channels, 3, 3, 3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["output"])],
        "conv", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", channels, size, size])],
        [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


@pytest.fixture
def one_error_line():
    """The CLI's promise for user mistakes: exactly one 'error:' line and no traceback."""

    def check(err: str) -> str:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        assert len(errors) == 1, err
        assert "Traceback" not in err, err
        return errors[0]

    return check
