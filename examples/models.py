"""Small example models made in-process (no download), for the README demo, the tests and the benchmarks.

    digits_mlp(out_dir)        an MLP trained on scikit-learn's bundled load_digits in ~2 s: ONNX file plus
                               calibration / evaluation .npz files with labels (real data, real accuracy)
    tiny_transformer()         a 2-layer transformer encoder: int64 input_ids + attention_mask, two outputs
                               (logits, hidden); also usable as ``examples/models.py:tiny_transformer``
    transformer_onnx(out_dir)  that encoder exported to ONNX with a dynamic sequence axis, plus calibration data
    resnet18()                 ResNet-18 (torchvision topology, plain torch, seeded random weights)
    resnet18_onnx(path)        that ResNet-18 as ONNX (opset 17, dynamic batch), as the benchmarks use it
    digits_cnn(out_dir)        a small CNN on the same digits as 1x8x8 images (Conv 3x3 x2 + ReLU, Linear):
                               the conv path of INT8/FP8 with real accuracy
    digits_keras(out_dir)      the digits MLP in Keras (the [tensorflow] extra): a SavedModel folder and a .keras
                               file, with the same calibration / evaluation .npz files

Needs torch (and scikit-learn for the digits); only numpy at import time.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np


@dataclasses.dataclass
class ExampleModel:
    onnx: Path  # the FP32 ONNX file
    calib: Path  # .npz: arrays by input name (+ "labels" when there are labels)
    eval: Path  # .npz held out from calibration
    fp32_accuracy: float | None = None  # measured on ``eval`` by torch, None when there are no labels


# -- digits: a real classifier on real data -------------------------------------------------------------------
def digits_module(seed: int = 0, epochs: int = 40):
    """An MLP 64 -> 128 -> 64 -> 10 trained on load_digits; returns (module, splits) with splits a dict of
    (x, y) arrays: train, calib, eval."""
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    order = np.random.RandomState(seed).permutation(len(x))
    x, y = x[order], y[order]
    splits = {"train": (x[:1200], y[:1200]), "calib": (x[1200:1500], y[1200:1500]), "eval": (x[1500:], y[1500:])}
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    return _train(net, splits["train"], seed, epochs), splits


def _train(net, train, seed: int, epochs: int):
    """Adam on cross-entropy, batches of 64 in a seeded order; returns the module in eval mode."""
    import torch
    from torch import nn

    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    gen = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and immune to a busy machine
    try:
        for _ in range(epochs):
            for idx in torch.randperm(len(xt), generator=gen).split(64):
                opt.zero_grad()
                nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def digits_mlp(out_dir: str | Path, seed: int = 0) -> ExampleModel:
    """Train the digits MLP and write ``digits.onnx``, ``digits-calib.npz`` and ``digits-eval.npz``."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net, splits = digits_module(seed)
    path = out / "digits.onnx"
    _export(net, (torch.from_numpy(splits["eval"][0][:2]),), path, ["input"], ["logits"])
    for name in ("calib", "eval"):
        xs, ys = splits[name]
        np.savez(out / f"digits-{name}.npz", input=xs, labels=ys)
    with torch.no_grad():
        pred = net(torch.from_numpy(splits["eval"][0])).argmax(1).numpy()
    acc = float((pred == splits["eval"][1]).mean())
    return ExampleModel(onnx=path, calib=out / "digits-calib.npz", eval=out / "digits-eval.npz", fp32_accuracy=acc)


def digits_cnn(out_dir: str | Path, seed: int = 0, epochs: int = 25) -> ExampleModel:
    """A CNN on the digits as 1x8x8 images (Conv 1->16 3x3, ReLU, Conv 16->32 3x3 stride 2, ReLU, Flatten,
    Linear 512->10), trained like the MLP on the same split; writes ``digits-cnn.onnx`` and its .npz files."""
    import torch
    from torch import nn

    _, splits = digits_module(seed, epochs=0)  # the same split, untrained MLP discarded
    splits = {k: (x.reshape(-1, 1, 8, 8), y) for k, (x, y) in splits.items()}
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(32 * 4 * 4, 10))
    net = _train(net, splits["train"], seed, epochs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "digits-cnn.onnx"
    _export(net, (torch.from_numpy(splits["eval"][0][:2]),), path, ["input"], ["logits"])
    for name in ("calib", "eval"):
        xs, ys = splits[name]
        np.savez(out / f"digits-cnn-{name}.npz", input=xs, labels=ys)
    with torch.no_grad():
        pred = net(torch.from_numpy(splits["eval"][0])).argmax(1).numpy()
    acc = float((pred == splits["eval"][1]).mean())
    return ExampleModel(onnx=path, calib=out / "digits-cnn-calib.npz", eval=out / "digits-cnn-eval.npz",
                        fp32_accuracy=acc)


# -- a small transformer encoder: several int64 inputs, several outputs, dynamic sequence length ---------------
def _transformer_classes():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, d: int, heads: int):
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.ln1 = nn.LayerNorm(d)
            self.ln2 = nn.LayerNorm(d)
            self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

        def forward(self, x, bias):
            b, s, d = x.shape
            qkv = self.qkv(self.ln1(x)).reshape(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            att = (q @ k.transpose(-1, -2)) * (d // self.heads) ** -0.5 + bias
            y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, s, d)
            x = x + self.proj(y)
            return x + self.ff(self.ln2(x))

    class TinyEncoder(nn.Module):
        """input_ids [batch, seq] int64, attention_mask [batch, seq] int64 -> logits [batch, classes],
        hidden [batch, seq, d]."""

        def __init__(self, vocab: int = 100, d: int = 32, heads: int = 2, layers: int = 2, max_len: int = 512,
                     classes: int = 4):
            super().__init__()
            self.tok = nn.Embedding(vocab, d)
            self.pos = nn.Embedding(max_len, d)
            self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
            self.ln = nn.LayerNorm(d)
            self.head = nn.Linear(d, classes)

        def forward(self, input_ids, attention_mask):
            pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            x = self.tok(input_ids) + self.pos(pos)
            mask = attention_mask.to(x.dtype)
            bias = ((1.0 - mask) * -1e4)[:, None, None, :]  # -1e4 (not -inf): safe in FP16
            for blk in self.blocks:
                x = blk(x, bias)
            hidden = self.ln(x)
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
            return self.head(pooled), hidden

    return TinyEncoder


def tiny_transformer(seed: int = 0, **kw):
    """The encoder with seeded random weights, in eval mode (a ``module:factory`` for ``xinfer-sdk build``)."""
    import torch

    torch.manual_seed(seed)
    return _transformer_classes()(**kw).eval()


def token_batch(n: int, seq: int, *, vocab: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids with right padding (each row keeps between seq/2 and seq tokens)."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, vocab, size=(n, seq)).astype(np.int64)
    lengths = rng.randint(max(1, seq // 2), seq + 1, size=n)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


def transformer_onnx(out_dir: str | Path, seed: int = 0, seq: int = 16) -> ExampleModel:
    """Export the encoder (dynamic batch and sequence axes) and write calibration / evaluation data."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = tiny_transformer(seed)
    sample = token_batch(2, seq, seed=seed + 1)
    path = out / "transformer.onnx"
    _export(net, tuple(torch.from_numpy(v) for v in sample.values()), path, list(sample), ["logits", "hidden"],
            extra_axes={"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}, "hidden": {1: "seq"}})
    np.savez(out / "transformer-calib.npz", **token_batch(64, seq, seed=seed + 2))
    np.savez(out / "transformer-eval.npz", **token_batch(32, seq, seed=seed + 3))
    return ExampleModel(onnx=path, calib=out / "transformer-calib.npz", eval=out / "transformer-eval.npz")


# -- ResNet-18 (the benchmarks' compute-bound model) ------------------------------------------------------------
def resnet18(seed: int = 0, num_classes: int = 1000):
    """torchvision's resnet18 topology ([2, 2, 2, 2] basic blocks), written out in plain torch."""
    import torch
    from torch import nn

    def conv_bn(cin, cout, k, stride):
        return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(*conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True), *conv_bn(cout, cout, 3, 1))
            self.skip = nn.Sequential(*conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else nn.Identity()

        def forward(self, x):
            return torch.relu(self.body(x) + self.skip(x))

    torch.manual_seed(seed)
    stages, cin = [], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        stages += [Basic(cin, cout, stride), Basic(cout, cout, 1)]
        cin = cout
    net = nn.Sequential(*conv_bn(3, 64, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1), *stages,
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net.eval()


def resnet18_onnx(path: str | Path, seed: int = 0) -> Path:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _export(resnet18(seed), (torch.randn(2, 3, 224, 224),), path, ["input"], ["output"])
    return path


def image_batch(n: int, seed: int = 0, size: int = 224) -> np.ndarray:
    """Smooth, natural-image-like inputs (normalized), so calibration ranges look like real ones."""
    rng = np.random.RandomState(seed)
    low = rng.randn(n, 3, size // 16, size // 16).astype(np.float32)
    return np.repeat(np.repeat(low, 16, axis=2), 16, axis=3) + 0.1 * rng.randn(n, 3, size, size).astype(np.float32)


def _export(net, args, path: Path, inputs, outputs, extra_axes=None, opset: int = 17) -> None:
    import torch

    axes = {n: {0: "batch"} for n in [*inputs, *outputs]}
    for name, more in (extra_axes or {}).items():
        axes[name] = {**axes.get(name, {}), **more}
    with torch.no_grad():
        torch.onnx.export(net, args, str(path), dynamo=False, opset_version=opset, input_names=list(inputs),
                          output_names=list(outputs), dynamic_axes=axes, do_constant_folding=True)


# -- digits in Keras: the same data and split, a TensorFlow SavedModel and a .keras file -----------------------
@dataclasses.dataclass
class KerasExample:
    saved_model: Path  # a SavedModel folder written by model.export (signature serving_default)
    keras_file: Path  # the same model saved with model.save (.keras, Keras 3)
    calib: Path  # .npz: input + labels
    eval: Path  # .npz held out from calibration
    fp32_accuracy: float  # measured on ``eval`` by Keras
    model: object = None  # the trained keras.Model


def digits_keras(out_dir: str | Path, seed: int = 0, epochs: int = 15) -> KerasExample:
    """A Keras MLP 64 -> 128 -> 64 -> 10 (logits) trained on load_digits in ~2 s (needs the [tensorflow] extra
    and scikit-learn); writes ``digits_saved_model/``, ``digits.keras`` and the calib / eval .npz files, with the
    same split as ``digits_mlp``. Input ``input`` (batch x 64), output ``output_0``."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from sklearn.datasets import load_digits

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    order = np.random.RandomState(seed).permutation(len(x))
    x, y = x[order], y[order]
    splits = {"train": (x[:1200], y[:1200]), "calib": (x[1200:1500], y[1200:1500]), "eval": (x[1500:], y[1500:])}
    keras.utils.set_random_seed(seed)
    net = keras.Sequential([keras.Input((64,), name="input"), keras.layers.Dense(128, activation="relu"),
                            keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    net.compile(optimizer=keras.optimizers.Adam(1e-2),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    net.fit(*splits["train"], epochs=epochs, batch_size=64, verbose=0)
    for name in ("calib", "eval"):
        xs, ys = splits[name]
        np.savez(out / f"digits-{name}.npz", input=xs, labels=ys)
    saved, keras_file = out / "digits_saved_model", out / "digits.keras"
    net.export(str(saved), format="tf_saved_model", verbose=False)
    net.save(str(keras_file))
    pred = net.predict(splits["eval"][0], verbose=0).argmax(1)
    acc = float((pred == splits["eval"][1]).mean())
    return KerasExample(saved_model=saved, keras_file=keras_file, calib=out / "digits-calib.npz",
                        eval=out / "digits-eval.npz", fp32_accuracy=acc, model=net)
