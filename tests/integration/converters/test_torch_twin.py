"""A bundle built from PyTorch keeps a TorchScript twin: the torch backend runs it and agrees with ONNX Runtime."""

from __future__ import annotations

import numpy as np

import xinfer_sdk as xs


def test_module_factory_bundle_runs_on_torch_and_onnxruntime(models, tmp_path):
    bundle = xs.build(models.tiny_transformer(), "cpu", "fp32", output=tmp_path / "enc.xinfer",
                      shapes="input_ids:1x8..4x16..8x32,attention_mask:1x8..4x16..8x32",
                      dtypes={"input_ids": "int64", "attention_mask": "int64"})
    roles = {a.role for a in bundle.manifest.artifacts.values()}
    assert "torchscript" in roles
    feeds = models.token_batch(3, 20)
    with xs.load(bundle.root, profile="cpu", backend="torch") as t, \
            xs.load(bundle.root, profile="cpu", backend="onnxruntime") as o:
        got_t, got_o = t.infer(feeds), o.infer(feeds)
    for name in got_o:
        np.testing.assert_allclose(got_t[name], got_o[name], rtol=1e-4, atol=1e-4)


def test_torchscript_input_is_kept_as_the_twin(models, tmp_path):
    import torch

    net = models.tiny_transformer()
    args = tuple(torch.from_numpy(v) for v in models.token_batch(2, 12).values())
    path = tmp_path / "enc.pt"
    torch.jit.trace(net, args).save(str(path))
    bundle = xs.build(path, "cpu", "fp32", output=tmp_path / "s.xinfer",
                      shapes="input_ids:1x8..4x16..8x32,attention_mask:1x8..4x16..8x32",
                      dtypes={"input_ids": "int64", "attention_mask": "int64"})
    from xinfer_sdk.bundle import sha256_file

    twin = [a for a in bundle.manifest.artifacts.values() if a.role == "torchscript"]
    assert len(twin) == 1 and twin[0].sha256 == sha256_file(path)
