"""The build's TensorRT step records the graph's type in the plan and the engine's layer precisions in the
manifest meta (build_engine replaced by a stand-in returning what the real one returns)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from xinfer_sdk.converters import engine_check
from xinfer_sdk.converters import tensorrt_engine as te
from xinfer_sdk.converters.pipeline import Skip
from xinfer_sdk.converters.tensorrt_step import tensorrt_step

from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.profiles import load_profile


def ctx_for(tmp_path: Path, precision: str, converted: bool):
    prof = load_profile("h200")
    opts = types.SimpleNamespace(precision=precision, max_batch_size=8, shapes={}, build_engine=True,
                                 batch=types.SimpleNamespace(preferred_batch_sizes=(8,)))
    return types.SimpleNamespace(profile=prof, options=opts, inputs=[TensorSpec("x", "float32", (-1, 4))],
                                 batched=True, model_onnx=tmp_path / "m.onnx" if converted else None,
                                 fp32_onnx=tmp_path / "r.onnx", staging=tmp_path, engines=[], tools={},
                                 engine_plan=None)


def test_step_records_graph_type_and_layer_precisions(monkeypatch, tmp_path):
    layers = engine_check.summarize('{"Layers": [{"Name": "g", "LayerType": "CaskGemmMatrixMultiply", '
                                    '"ParameterType": "MatrixMultiply", "Inputs": [{"Format/Datatype": '
                                    '"Row major linear BFloat16 format"}], "Outputs": []}]}', "bf16")
    seen = {}

    def fake_build(model, plan, out_dir, log=None, device="cuda:0"):
        seen["model"], seen["plan"] = model, plan
        return {"path": str(tmp_path / "e.plan"), "key": "sm90_trt11.4.0_bf16_01234567", "timing_cache": None,
                "seconds": 1.0, "tensorrt_version": "11.4.0", "compute_capability": "9.0", "precision": "bf16",
                "plan_hash": plan["hash"], "dla": False, "layer_precisions": layers}

    monkeypatch.setattr(te, "unavailable_reason", lambda *a, **k: None)
    monkeypatch.setattr(te, "build_engine", fake_build)
    ctx = ctx_for(tmp_path, "bf16", converted=True)
    message, details = tensorrt_step(ctx)
    assert seen["model"] == tmp_path / "m.onnx" and ctx.engine_plan["graph"] == "bf16"
    assert ctx.engine_plan["per_major"]["11"]["supported"] is True
    assert ctx.engines[0]["meta"]["layer_precisions"] == layers
    assert details["layer_precisions"] == "ok" and "layer precisions ok: 1 of 1 FLOP layers in BF16" in message


def test_plan_of_an_unconverted_graph_says_fp32(monkeypatch, tmp_path):
    monkeypatch.setattr(te, "unavailable_reason", lambda *a, **k: "no GPU here")
    ctx = ctx_for(tmp_path, "fp32", converted=False)
    with pytest.raises(Skip, match="no GPU here"):  # no engine here; the plan is recorded
        tensorrt_step(ctx)
    assert ctx.engine_plan["graph"] == "fp32"
