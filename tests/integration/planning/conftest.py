"""Models the planner has never seen, exported with torch in-process: a small transformer encoder with a
dynamic sequence axis, and a small MLP (plus a bundle made from it for `tune`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _export(net, args, path: Path, inputs, outputs, axes) -> Path:
    import torch

    net.eval()
    with torch.no_grad():
        torch.onnx.export(net, args, str(path), dynamo=False, opset_version=17, input_names=list(inputs),
                          output_names=list(outputs), dynamic_axes=axes, do_constant_folding=True)
    return path


@pytest.fixture(scope="session")
def transformer_file(tmp_path_factory) -> Path:
    """ids [batch, seq] int64 -> embedding -> 2 pre-norm encoder blocks (4 heads, d=64, explicit QK^T / softmax /
    AV MatMuls) -> mean-pooled logits [batch, 3]."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class Block(nn.Module):
        def __init__(self, d=64, heads=4):
            super().__init__()
            self.h, self.dk = heads, d // heads
            self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

        def forward(self, x):
            b, s, d = x.shape
            q, k, v = self.qkv(self.n1(x)).reshape(b, s, 3, self.h, self.dk).permute(2, 0, 3, 1, 4).unbind(0)
            att = torch.softmax(q @ k.transpose(-1, -2) / self.dk ** 0.5, dim=-1)
            x = x + self.out((att @ v).transpose(1, 2).reshape(b, s, d))
            return x + self.ff(self.n2(x))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(1000, 64)
            self.blocks = nn.Sequential(Block(), Block())
            self.head = nn.Linear(64, 3)

        def forward(self, ids):
            return self.head(self.blocks(self.emb(ids)).mean(dim=1))

    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (2, 16))
    path = tmp_path_factory.mktemp("transformer") / "encoder.onnx"
    return _export(Encoder(), (ids,), path, ["ids"], ["logits"], {"ids": {0: "batch", 1: "seq"}, "logits": {0: "batch"}})


@pytest.fixture(scope="session")
def mlp_file(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    return _export(net, (torch.randn(1, 64),), path, ["input"], ["output"], {"input": {0: "batch"},
                                                                              "output": {0: "batch"}})


@pytest.fixture
def mlp_bundle(mlp_file, tmp_path) -> Path:
    """A bundle folder around the MLP, written with the bundle API (manifest + checksummed model.onnx)."""
    import shutil

    from xinfer_sdk.bundle import Manifest, TensorSpec, register, save_manifest
    from xinfer_sdk.profiles import load_profile

    root = tmp_path / "mlp.xinfer"
    root.mkdir()
    shutil.copy(mlp_file, root / "model.onnx")
    cpu = load_profile("cpu")
    m = Manifest(name="mlp", inputs=[TensorSpec("input", "float32", (-1, 64), ("batch", None))],
                 outputs=[TensorSpec("output", "float32", (-1, 10), ("batch", None))], precision="fp32",
                 max_batch_size=32, profile={"name": "cpu"}, batch=cpu.batch.to_dict())
    register(root, m, "model.onnx", role="model")
    save_manifest(root, m)
    return root


def rng_ids(n: int, seq: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 1000, (n, seq)).astype(np.int64)
