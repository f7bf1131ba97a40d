"""A bundle with an ONNX graph and a TorchScript twin: same inputs -> same outputs on ORT and torch;
checksums are enforced."""

from __future__ import annotations

import numpy as np
import pytest

import xinfer_sdk as xs
from xinfer_sdk.bundle import Manifest, TensorSpec, open_bundle, register, save_manifest
from xinfer_sdk.errors import BundleError

torch = pytest.importorskip("torch")


class TwoInTwoOut(torch.nn.Module):
    """Token ids (int64) + features -> logits and a pooled vector: several inputs/outputs, an int64 input."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.lin = torch.nn.Linear(8 + 4, 6)

    def forward(self, input_ids, feats):
        pooled = self.emb(input_ids).mean(dim=1)
        logits = self.lin(torch.cat([pooled, feats], dim=1))
        return logits, pooled


@pytest.fixture
def bundle_dir(tmp_path):
    torch.manual_seed(0)
    m = TwoInTwoOut().eval()
    ids = torch.randint(0, 50, (2, 5))
    feats = torch.randn(2, 4)
    root = tmp_path / "two.xinfer"
    root.mkdir()
    torch.onnx.export(m, (ids, feats), str(root / "model.onnx"), dynamo=False, opset_version=17,
                      input_names=["input_ids", "feats"], output_names=["logits", "pooled"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "feats": {0: "batch"},
                                    "logits": {0: "batch"}, "pooled": {0: "batch"}})
    torch.jit.save(torch.jit.trace(m, (ids, feats)), str(root / "model.ts"))
    man = Manifest(
        name="two", precision="fp32", max_batch_size=8, profile={"name": "cpu"}, batch={"max_batch_size": 8},
        inputs=[TensorSpec("input_ids", "int64", (-1, -1), ("batch", "seq")), TensorSpec("feats", "float32", (-1, 4))],
        outputs=[TensorSpec("logits", "float32", (-1, 6)), TensorSpec("pooled", "float32", (-1, 8))])
    register(root, man, "model.onnx", role="model")
    register(root, man, "model.ts", role="torchscript")
    save_manifest(root, man)
    return root, m


def test_ort_and_torch_agree_on_the_same_bundle(bundle_dir):
    root, module = bundle_dir
    rng = np.random.default_rng(0)
    inputs = {"input_ids": rng.integers(0, 50, (3, 7)).astype(np.int64),
              "feats": rng.standard_normal((3, 4)).astype(np.float32)}
    with xs.load(root, profile="cpu", backend="onnxruntime") as a, xs.load(root, profile="cpu", backend="torch") as b:
        oa, ob = a.infer(inputs), b.infer(inputs)
        assert b.describe()["backend"] == "torch"
    for name in ("logits", "pooled"):
        np.testing.assert_allclose(oa[name], ob[name], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        ref = module(torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["feats"]))
    np.testing.assert_allclose(oa["logits"], ref[0].numpy(), rtol=1e-4, atol=1e-5)


def test_bundle_policy_is_the_default(bundle_dir):
    root, _ = bundle_dir
    with xs.load(root, profile="cpu") as model:
        assert model.policy.max_batch_size == 8


def test_tampered_artifact_is_refused(bundle_dir):
    root, _ = bundle_dir
    with open(root / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="checksum mismatch for 'model.onnx'"):
        open_bundle(root)


def test_manifest_paths_may_not_leave_the_bundle(bundle_dir):
    root, _ = bundle_dir
    text = (root / "xinfer.yaml").read_text().replace("path: model.ts", "path: ../outside.ts")
    (root / "xinfer.yaml").write_text(text)
    with pytest.raises(BundleError, match="leaves the bundle"):
        open_bundle(root)


def test_without_a_torch_artifact_the_torch_backend_explains(mlp_onnx):
    path, _ = mlp_onnx
    with pytest.raises(xs.BackendUnavailable, match="no TorchScript"):
        xs.load(path, profile="cpu", backend="torch")


def test_bundle_that_failed_its_gate_is_refused_unless_allowed(bundle_dir):
    root, _ = bundle_dir
    from xinfer_sdk.bundle import open_bundle, save_manifest

    b = open_bundle(root)
    b.manifest.accuracy = {"passed": False}
    save_manifest(root, b.manifest)
    with pytest.raises(BundleError, match="failed its accuracy gate"):
        xs.load(root, profile="cpu")
    with xs.load(root, profile="cpu", allow_failed_gate=True) as model:
        assert model.name == "two"
