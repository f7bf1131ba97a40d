"""The uncalibrated GPU roofline of `xinfer-sdk plan` against published TensorRT latencies (no GPU needed).

NVIDIA publishes per-batch latencies of BERT-Base (sequence 128) built with TensorRT on an A100 40GB and a T4,
FP16 and INT8 (github.com/NVIDIA/TensorRT, demo/BERT/README.md, "Inference performance", average latency;
their timing excludes host<->device copies). This script builds a BERT-Base-sized encoder in-process (12
layers, hidden 768, 12 heads, FFN 3072, vocabulary 30522; plain torch, seeded random weights, ONNX opset 17),
prices it with the planner's device model for the `a100-pcie-40gb` and `t4` profiles, and prints predicted
(without copies, like NVIDIA's figures) against published, per batch size.

Nothing in the planner was fitted to these figures: they are an out-of-sample check of the GPU factors
(xinfer_sdk/planning/device.py). NVIDIA's engine uses hand-fused BERT plugins (fused multi-head attention,
skip-LayerNorm): the planner assumes the generic fusions of docs/planning.md, so its traffic estimate for
attention is higher than theirs.

    python bench/plan_gpu_reference.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

SOURCE = "https://github.com/NVIDIA/TensorRT/blob/main/demo/BERT/README.md (BERT Base, sequence length 128)"
PUBLISHED_MS = {  # average latency, ms, by batch size
    ("a100-pcie-40gb", "int8"): {1: 0.58, 2: 0.62, 4: 0.77, 8: 0.95, 16: 1.37, 32: 2.27, 64: 4.20, 128: 8.18},
    ("a100-pcie-40gb", "fp16"): {1: 0.67, 2: 0.83, 4: 1.02, 8: 1.38, 16: 2.18, 32: 4.10, 64: 8.05, 128: 16.14},
    ("t4", "int8"): {1: 1.69, 2: 1.82, 4: 2.63, 8: 4.66, 16: 9.37, 32: 18.93, 64: 36.54, 128: 73.15},
    ("t4", "fp16"): {1: 1.95, 2: 2.71, 4: 4.53, 8: 9.09, 16: 17.90, 32: 36.63, 64: 72.04, 128: 144.20},
}


def bert_base(path: Path) -> Path:
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, d=768, heads=12):
            super().__init__()
            self.h, self.dk = heads, d // heads
            self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

        def forward(self, x):
            b, s, d = x.shape
            q, k, v = self.qkv(x).reshape(b, s, 3, self.h, self.dk).permute(2, 0, 3, 1, 4).unbind(0)
            att = torch.softmax(q @ k.transpose(-1, -2) / self.dk ** 0.5, dim=-1)
            x = self.n1(x + self.out((att @ v).transpose(1, 2).reshape(b, s, d)))
            return self.n2(x + self.ff(x))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(30522, 768)
            self.blocks = nn.Sequential(*[Block() for _ in range(12)])
            self.head = nn.Linear(768, 2)

        def forward(self, input_ids):
            return self.head(self.blocks(self.emb(input_ids))[:, 0])

    torch.manual_seed(0)
    with torch.no_grad():
        torch.onnx.export(Encoder().eval(), (torch.randint(0, 30522, (2, 128)),), str(path), dynamo=False,
                          opset_version=17, input_names=["input_ids"], output_names=["logits"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch"}})
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from xinfer_sdk.planning.cost import build_curve
    from xinfer_sdk.planning.device import batch_time, device_model
    from xinfer_sdk.profiles import load_profile
    from xinfer_sdk.shapes import parse_shapes

    print(f"published: {SOURCE}")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        model = bert_base(Path(tmp) / "bert_base.onnx")
        for (profile, precision), rows in PUBLISHED_MS.items():
            curve = build_curve(model, precision=precision, shapes=parse_shapes("input_ids:1x128"))
            dev = device_model(load_profile(profile), precision)
            errs = []
            print(f"\n{profile} {precision}:  batch  predicted ms  published ms  error")
            for b, ms in rows.items():
                bt = batch_time(dev, curve, b, requests=1)
                pred = (bt.seconds - bt.copy_s) * 1e3
                err = (pred - ms) / ms
                errs.append(err)
                out.append({"profile": profile, "precision": precision, "batch": b, "predicted_ms": pred,
                            "published_ms": ms, "error": err})
                print(f"{'':>24}{b:>5} {pred:>13.3g} {ms:>13.3g} {err * 100:+6.0f}%")
            print(f"{'':>24}error range {min(errs) * 100:+.0f}% .. {max(errs) * 100:+.0f}%")
    if a.json:
        Path(a.json).write_text(json.dumps({"source": SOURCE, "rows": out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
