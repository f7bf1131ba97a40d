"""TensorFlow input (the [tensorflow] extra): a real Keras model trained on scikit-learn's digits, as a SavedModel
folder and as a .keras file, built to INT8 through the accuracy gate on the cpu profile and served; the served answer
is checked against TensorFlow's own prediction. Signature choice (--signature) and the missing-extra message."""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest

import xinfer_sdk as xs
from xinfer_sdk.errors import MissingDependency

pytest.importorskip("sklearn")
pytest.importorskip("tf2onnx")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("httptools")

# Keras' predict() on numpy 2 (its own code, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")



@pytest.fixture(scope="module")
def keras_digits(tmp_path_factory):
    root = Path(__file__).resolve().parents[3]
    spec = importlib.util.spec_from_file_location("xinfer_example_models", root / "examples" / "models.py")
    models = sys.modules.get(spec.name)
    if models is None:
        models = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = models  # dataclasses look their module up there
        spec.loader.exec_module(models)
    return models.digits_keras(tmp_path_factory.mktemp("keras-digits"))


@pytest.fixture(scope="module")
def bundles(keras_digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("tf-bundles")
    return {kind: xs.build(str(src), "cpu", "int8", calib=keras_digits.calib, eval=keras_digits.eval,
                           output=out / f"{kind}.xinfer")
            for kind, src in (("saved_model", keras_digits.saved_model), ("keras", keras_digits.keras_file))}


def _step(bundle, name):
    return next(s for s in bundle.manifest.steps if s.name == name)


@pytest.mark.parametrize("kind", ["saved_model", "keras"])
def test_builds_int8_through_the_gate(bundles, keras_digits, kind):
    bundle = bundles[kind]
    m = bundle.manifest
    assert keras_digits.fp32_accuracy > 0.95  # the Keras model really learned
    assert m.source["format"] == "tensorflow" and m.source["signature"] == "serving_default"
    assert ("keras" in m.source) == (kind == "keras")
    assert m.tools["tensorflow"] == tf.__version__ and m.tools["tf2onnx"]
    # names from the signature, the batch axis kept dynamic
    assert [(t.name, t.shape, t.dim_names[0]) for t in m.inputs] == [("input", (-1, 64), "batch")]
    assert [(t.name, t.shape) for t in m.outputs] == [("output_0", (-1, 10))]
    assert _step(bundle, "cleanup").details["batched"]
    export = _step(bundle, "export")
    assert export.status == "ok" and export.details["dynamic_axes"] == {"input": {"0": "batch"}}
    checks = export.details["verified"]  # ONNX Runtime vs TensorFlow at two batch sizes
    assert [c["shapes"]["input"][0] for c in checks] == [2, 3] and max(c["max_rel_error"] for c in checks) < 1e-5
    assert _step(bundle, "int8").status == "ok"
    graph = onnx.load(str(bundle.model_file))
    assert sum(n.op_type == "DequantizeLinear" for n in graph.graph.node) >= 3
    acc = m.accuracy
    assert acc["passed"] and acc["samples"] == 297
    assert abs(acc["true_accuracy"]["reference"] - keras_digits.fp32_accuracy) < 0.004  # ORT FP32 == Keras
    assert acc["true_accuracy"]["drop"] <= 0.01


def _infer(port: int, model: str, x: np.ndarray) -> np.ndarray:
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                   "data": x.ravel().tolist()}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{model}/infer", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        out = json.loads(r.read())["outputs"][0]
    assert out["name"] == "output_0"
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def test_served_answers_match_tensorflow(bundles, keras_digits):
    from xinfer_sdk.server.runner import Server

    data = np.load(keras_digits.eval)
    x, labels = data["input"][:64], data["labels"][:64]
    want = keras_digits.model.predict(x, verbose=0)  # TensorFlow's own prediction
    models = [xs.load(bundles[k].root, profile="cpu", name=k, threads=1) for k in ("saved_model", "keras")]
    with Server(models, port=0, grpc_port=None, gpu_metrics=False, drain_timeout=5) as srv:
        for name in ("saved_model", "keras"):
            got = _infer(srv.port, name, x)
            assert got.shape == (64, 10)
            agree = float((got.argmax(1) == want.argmax(1)).mean())
            assert agree >= 0.96, (name, agree)
            cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
            assert cos.min() > 0.98, (name, cos.min())
            assert (got.argmax(1) == labels).mean() > 0.9
            one = _infer(srv.port, name, x[:1])  # batch 1 is the same model
            assert np.allclose(one[0], got[0], atol=1e-4)


# -- signatures -----------------------------------------------------------------------------------------------
class _Scaler(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def double(self, x):
        return {"y": x * 2.0}

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def triple(self, x):
        return {"y": x * 3.0}


@pytest.fixture(scope="module")
def two_signatures(tmp_path_factory):
    path = tmp_path_factory.mktemp("sigs") / "scaler"
    module = _Scaler()
    tf.saved_model.save(module, str(path), signatures={"double": module.double, "triple": module.triple})
    return path


def test_several_signatures_need_signature(cli_run, two_signatures, tmp_path, one_error_line):
    code, _, err = cli_run("build", str(two_signatures), "--profile", "cpu", "-q", "-o", str(tmp_path / "a.xinfer"))
    line = one_error_line(err)
    assert code == 2 and "2 signatures (double, triple)" in line and "--signature" in line
    code, _, err = cli_run("build", str(two_signatures), "--signature", "half", "--profile", "cpu", "-q",
                           "-o", str(tmp_path / "b.xinfer"))
    line = one_error_line(err)
    assert code == 2 and "'half'" in line and "double, triple" in line
    code, _, err = cli_run("build", str(two_signatures), "--signature", "double", "--output-names", "z",
                           "--profile", "cpu", "-q", "-o", str(tmp_path / "c.xinfer"))
    assert code == 2 and "from its signature 'double' (inputs x; outputs y)" in one_error_line(err)
    assert not any((tmp_path / f"{n}.xinfer").exists() for n in "abc")


def test_signature_chosen_is_the_one_converted(cli_run, two_signatures, tmp_path):
    out = tmp_path / "t.xinfer"
    code, _, err = cli_run("build", str(two_signatures), "--signature", "triple", "--profile", "cpu",
                           "--precision", "fp32", "-q", "-o", str(out))
    assert code == 0, err
    model = xs.load(out, profile="cpu", threads=1)
    try:
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        assert np.allclose(model.infer({"x": x})["y"], 3 * x)
    finally:
        model.close()
    manifest = xs.open_bundle(out).manifest
    assert manifest.source["signature"] == "triple"
    assert "--signature triple" in manifest.extra["build"]["reproduce"]


def test_without_the_extra_the_error_names_it(cli_run, keras_digits, tmp_path, monkeypatch, one_error_line):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` raises ImportError
    with pytest.raises(MissingDependency) as info:
        xs.build(str(keras_digits.saved_model), "cpu", "fp32", output=tmp_path / "x.xinfer")
    assert info.value.extra == "tensorflow"
    code, _, err = cli_run("build", str(keras_digits.keras_file), "--profile", "cpu", "-q",
                           "-o", str(tmp_path / "y.xinfer"))
    assert code == 2 and "tensorflow" in one_error_line(err) and "pip install 'xinfer-sdk[tensorflow]'" in err
