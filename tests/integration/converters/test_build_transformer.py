"""A small transformer: several int64 inputs, two outputs, a dynamic sequence axis, from ONNX and PyTorch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import xinfer_sdk as xs

ROOT = Path(__file__).resolve().parents[3]
SHAPES = "input_ids:1x4..8x16..32x64,attention_mask:1x4..8x16..32x64"
FACTORY = f"{ROOT / 'examples' / 'models.py'}:tiny_transformer"


def _run(bundle, feeds):
    sess = ort.InferenceSession(str(bundle.model_file), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def test_onnx_transformer_int8_for_t4(transformer, models, tmp_path):
    bundle = xs.build(transformer.onnx, "t4", "int8", calib=transformer.calib, eval=transformer.eval, shapes=SHAPES,
                      output=tmp_path / "tr.xinfer")
    m = bundle.manifest
    assert [(t.name, t.dtype, t.dim_names) for t in m.inputs] == [
        ("input_ids", "int64", ("batch", "seq")), ("attention_mask", "int64", ("batch", "seq"))]
    assert [(t.name, t.shape, t.dim_names) for t in m.outputs] == [
        ("logits", (-1, 4), ("batch", None)), ("hidden", (-1, -1, 32), ("batch", "seq", None))]
    assert m.max_batch_size == 32 and m.accuracy["passed"] and m.accuracy["primary_output"] == "logits"
    assert set(m.accuracy["outputs"]) == {"logits", "hidden"}
    # the INT8 graph runs at a batch and sequence length it never saw, and agrees with the FP32 reference
    feeds = models.token_batch(3, 40, seed=9)
    got = _run(bundle, feeds)
    ref = ort.InferenceSession(str(bundle.path("reference.onnx"))).run(None, feeds)
    assert got["hidden"].shape == (3, 40, 32) and got["logits"].shape == (3, 4)
    cos = float(np.dot(got["hidden"].ravel(), ref[1].ravel()) / np.linalg.norm(got["hidden"]) / np.linalg.norm(ref[1]))
    assert cos > 0.98
    plan = m.engine_plan
    assert plan["precision"] == "int8" and plan["batch"] == {"min": 1, "opt": 32, "max": 32}
    assert plan["profiles"][0]["input_ids"] == {"min": [1, 4], "opt": [32, 16], "max": [32, 64]}
    trt_step = [s for s in m.steps if s.name == "tensorrt"][0]
    assert trt_step.status == "skipped" and "compiles the engine on the target" in trt_step.message


def test_cpu_int8_gate_reports_this_hosts_int8_kernels_and_warns_when_they_fail(transformer, tmp_path):
    """The cpu bundle runs on ONNX Runtime's INT8 kernels: the gate measures the graph's own arithmetic and, beside
    it, this host's fused kernels (which saturate on x86 without VNNI/AMX); a warning says when only they fail."""
    bundle = xs.build(transformer.onnx, "cpu", "int8", calib=transformer.calib, eval=transformer.eval, shapes=SHAPES,
                      output=tmp_path / "c.xinfer")
    report, feeds = bundle.manifest.accuracy, dict(np.load(transformer.eval))
    ref = ort.InferenceSession(str(bundle.path("reference.onnx"))).run(None, feeds)[0].astype(np.float64)
    fused = _run(bundle, feeds)["logits"].astype(np.float64)  # ONNX Runtime's defaults: Q/DQ fused into this CPU's INT8 kernels
    cosine = float(np.dot(ref.ravel(), fused.ravel()) / np.linalg.norm(ref) / np.linalg.norm(fused))
    host = report["host_kernels"]
    assert report["passed"] and abs(host["outputs"]["logits"]["cosine"] - cosine) < 1e-6
    assert host["passed"] == (cosine >= 0.98 and host["outputs"]["logits"]["top1_agreement"] >= 0.95)
    warned = [w for w in bundle.manifest.extra["warnings"] if "INT8 kernels on this build host" in w]
    assert len(warned) == (0 if host["passed"] else 1)
    assert all("reduce_range=true" in w for w in warned)


def test_pytorch_factory_exports_with_named_axes_and_fp16(tmp_path):
    bundle = xs.build(FACTORY, "t4", "fp16", shapes=SHAPES, dtypes={"input_ids": "int64", "attention_mask": "int64"},
                      dynamic_axes={"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}},
                      output_names=["logits", "hidden"], output=tmp_path / "f.xinfer")
    m = bundle.manifest
    assert m.source["format"] == "factory" and m.source["input_names"] == ["input_ids", "attention_mask"]
    assert [t.dim_names for t in m.outputs] == [("batch", None), ("batch", "seq", None)]
    export = [s for s in m.steps if s.name == "export"][0]
    assert export.status == "ok" and len(export.details["verified"]) == 2  # example shape and a varied one
    assert export.details["verified"][1]["shapes"]["input_ids"] != export.details["verified"][0]["shapes"]["input_ids"]
    model = onnx.load(str(bundle.model_file))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # IO stays FP32
    fp16 = [s for s in m.steps if s.name == "fp16"][0]
    assert "LayerNormalization" in fp16.details["blocked_ops_present"]
    assert m.accuracy["passed"] and m.accuracy["data_kind"] == "synthetic"


def test_torchscript_and_torch_export_files(models, tmp_path):
    import torch

    net = models.tiny_transformer()
    feeds = models.token_batch(2, 12)
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    scripted = tmp_path / "enc.pt"
    torch.jit.trace(net, args).save(str(scripted))
    calib = tmp_path / "c.npz"
    np.savez(calib, **models.token_batch(20, 12, seed=3))
    b1 = xs.build(scripted, "cpu", "int8", calib=calib, output=tmp_path / "s.xinfer")
    assert b1.manifest.source["format"] == "torchscript" and b1.manifest.accuracy["passed"]
    assert [t.name for t in b1.manifest.inputs] == ["input_ids", "attention_mask"]
    if importlib.util.find_spec("onnxscript") is None:
        pytest.skip("onnxscript is not installed: .pt2 export needs it (the [build] extra)")
    batch, seq = torch.export.Dim("batch", max=1024), torch.export.Dim("seq", max=128)
    program = torch.export.export(net, args, dynamic_shapes={"input_ids": {0: batch, 1: seq},
                                                             "attention_mask": {0: batch, 1: seq}})
    pt2 = tmp_path / "enc.pt2"
    torch.export.save(program, str(pt2))
    b2 = xs.build(pt2, "cpu", output=tmp_path / "e.xinfer", output_names=["logits", "hidden"])
    assert b2.manifest.source["format"] == "torch-export" and b2.manifest.max_batch_size == 32
    got = _run(b2, models.token_batch(3, 20))
    with torch.no_grad():
        want = net(*[torch.from_numpy(v) for v in models.token_batch(3, 20).values()])
    assert np.allclose(got["logits"], want[0].numpy(), atol=1e-4)


FACTORY_SRC = '''
import torch

class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, features):
        return self.fc(features).softmax(-1)

def make():
    return Head()
'''


def test_factory_with_a_state_dict_read_weights_only(tmp_path, one_error_line, cli_run):
    import torch

    src = tmp_path / "head.py"
    src.write_text(FACTORY_SRC)
    torch.manual_seed(3)
    trained = torch.nn.Linear(6, 3)
    torch.save({"fc.weight": trained.weight.data, "fc.bias": trained.bias.data}, tmp_path / "w.pt")
    bundle = xs.build(f"{src}:make", "cpu", weights=str(tmp_path / "w.pt"), shapes={"features": "1x6..8x6"},
                      output=tmp_path / "h.xinfer")
    x = np.random.RandomState(0).randn(4, 6).astype(np.float32)
    got = _run(bundle, {"features": x})["output"]
    with torch.no_grad():
        want = trained(torch.from_numpy(x)).softmax(-1).numpy()
    assert np.allclose(got, want, atol=1e-5) and bundle.manifest.source["weights"]["sha256"]
    torch.save({"other.weight": trained.weight.data}, tmp_path / "bad.pt")
    code, _, err = cli_run("build", f"{src}:make", "--profile", "cpu", "-q", "--weights", str(tmp_path / "bad.pt"),
                           "--shapes", "features:1x6..8x6", "-o", str(tmp_path / "b.xinfer"))
    assert code == 2 and "does not fit the module" in one_error_line(err)


HF_STYLE = '''
import torch

class Tagger(torch.nn.Module):
    """forward() in the Hugging Face style: optional arguments with defaults, some left out."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(50, 8)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, output_attentions=False):
        h = self.emb(input_ids)
        if token_type_ids is not None:
            h = h + 1.0
        if attention_mask is not None:
            h = h * attention_mask.unsqueeze(-1).to(h.dtype)
        return {"scores": self.out(h)}

def make():
    return Tagger()

def calib():
    for i in range(12):  # single samples (no batch axis)
        yield {"input_ids": (torch.arange(10) + i) % 50, "attention_mask": torch.ones(10, dtype=torch.int64)}
'''


def test_optional_forward_arguments_and_single_sample_calibration(tmp_path):
    src = tmp_path / "tagger.py"
    src.write_text(HF_STYLE)
    bundle = xs.build(f"{src}:make", "cpu", "int8", calib=f"{src}:calib", shapes={
        "input_ids": "1x4..4x10..16x32", "attention_mask": "1x4..4x10..16x32"}, output=tmp_path / "t.xinfer")
    m = bundle.manifest
    assert [t.name for t in m.inputs] == ["input_ids", "attention_mask"]  # token_type_ids left out
    assert [t.name for t in m.outputs] == ["scores"] and m.outputs[0].shape == (-1, -1, 3)
    assert m.outputs[0].dim_names[1] in ("input_ids_1", "attention_mask_1")  # follows an input's open axis
    assert m.calibration["samples"] == 10 and m.accuracy["samples"] == 2  # 12 single samples, 2 held out
    assert [s.status for s in m.steps if s.name == "export"] == ["ok"]
