"""The bundle a build writes: checksums of every artifact, inspect (tables and --json), every shipped profile."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnxruntime as ort
import pytest

import xinfer_sdk as xs
from xinfer_sdk.bundle import open_bundle
from xinfer_sdk.errors import BundleError
from xinfer_sdk.profiles import ProfileRegistry


def test_manifest_checksums_match_every_file(digits, tmp_path):
    bundle = xs.build(digits.onnx, "t4", "int8", calib=digits.calib, output=tmp_path / "d.xinfer")
    arts = bundle.manifest.artifacts
    assert set(arts) == {"model.onnx", "reference.onnx"}
    for rel, art in arts.items():
        data = (bundle.root / rel).read_bytes()
        assert art.sha256 == hashlib.sha256(data).hexdigest() and art.bytes == len(data)
    assert bundle.manifest.source["sha256"] == hashlib.sha256(digits.onnx.read_bytes()).hexdigest()
    m = bundle.manifest
    assert m.profile["name"] == "t4" and m.profile["resolved"]["compute_capability"] == "7.5"
    assert m.batch["max_batch_size"] == 32 and m.batch["preferred_batch_sizes"] == [8, 16, 32]
    assert {"xinfer-sdk", "onnx", "onnxruntime", "numpy"} <= set(m.tools)
    assert [s.name for s in m.steps] == ["input", "export", "cleanup", "memory_budget", "fp16", "bf16",
                                         "int8", "fp8", "accuracy_gate", "padding", "tensorrt"]
    assert "xinfer-sdk build" in m.extra["build"]["reproduce"] and "--precision int8" in m.extra["build"]["reproduce"]
    (bundle.root / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="checksum mismatch"):
        open_bundle(bundle.root)


def test_inspect_json_and_tables(cli_run, digits, tmp_path):
    out_dir = tmp_path / "d.xinfer"
    code, out, err = cli_run("build", str(digits.onnx), "--profile", "cpu", "--precision", "int8", "--calib",
                             str(digits.calib), "--eval", str(digits.eval), "-o", str(out_dir), "--json")
    assert code == 0, err
    built = json.loads(out)
    assert built["bundle"] == str(out_dir) and built["manifest"]["precision"] == "int8"
    assert "accuracy_gate | ok" in err  # per-step lines on stderr, JSON alone on stdout
    code, out, _ = cli_run("inspect", str(out_dir), "--json")
    d = json.loads(out)
    assert code == 0 and d["verified"] and d["accuracy"]["passed"] and d["calibration"]["scheme"] == "asymmetric"
    assert {a["path"] for a in d["artifacts"]} == {"model.onnx", "reference.onnx"}
    code, out, _ = cli_run("inspect", str(out_dir))
    assert code == 0 and "Accuracy gate: PASSED" in out and "[batch, 64]" in out and "artifacts verified" in out
    (out_dir / "reference.onnx").write_bytes(b"x")
    code, _, err = cli_run("inspect", str(out_dir))
    assert code == 2 and "checksum mismatch for 'reference.onnx'" in err
    code, _, _ = cli_run("inspect", str(out_dir), "--no-verify")
    assert code == 0


def test_profile_overrides_reach_the_bundle(cli_run, transformer, tmp_path):
    out_dir = tmp_path / "o.xinfer"
    code, out, err = cli_run("build", str(transformer.onnx), "--profile", "t4", "--set", "batch.max_batch_size=8",
                             "--set", "memory.workspace_gb=1", "--calib", str(transformer.calib), "--json", "-q",
                             "-o", str(out_dir))
    assert code == 0, err
    m = json.loads(out)["manifest"]
    assert m["max_batch_size"] == 8 and m["batch"]["preferred_batch_sizes"] == [8]
    assert m["profile"]["resolved"]["memory"]["workspace_gb"] == 1.0
    trt = [s for s in m["steps"] if s["name"] == "tensorrt"][0]  # no --shapes for the sequence axis
    assert trt["status"] == "failed" and "--shapes input_ids:" in trt["message"]
    assert any(w.startswith("optional step tensorrt failed") for w in m["extra"]["warnings"])


def test_rebuild_replaces_the_bundle(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = xs.build(digits.onnx, "cpu")
    assert first.root == tmp_path / "digits.xinfer" and first.manifest.precision == "fp32"
    second = xs.build(digits.onnx, "cpu", "fp16")
    assert second.root == first.root and second.manifest.precision == "fp16"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".digits")]  # no staging folders left


def test_every_shipped_profile_builds_here(digits, tmp_path):
    names = ProfileRegistry(use_env=False).names()
    assert len(names) >= 18
    for name in names:
        bundle = xs.build(digits.onnx, name, calib=digits.calib, eval=digits.eval, output=tmp_path / f"{name}.xinfer")
        m = bundle.manifest
        prof = xs.load_profile(name)
        assert m.precision == prof.default_precision and m.accuracy["passed"], name
        assert m.max_batch_size == prof.batch.max_batch_size
        trt = [s for s in m.steps if s.name == "tensorrt"][0]
        if prof.kind == "cpu" or "tensorrt" not in prof.backends:  # cpu, and AMD (no TensorRT there)
            assert trt.status == "skipped" and m.engine_plan is None
        else:  # the plan is recorded for the target; no engine can be built on this CPU machine
            assert m.engine_plan["target"]["profile"] == name and trt.status in ("skipped", "ok"), trt.message
            assert m.engine_plan["batch"]["max"] == prof.batch.max_batch_size
        sess = ort.InferenceSession(str(bundle.model_file), providers=["CPUExecutionProvider"])
        assert sess.get_inputs()[0].name == "input"


@pytest.mark.gpu
def test_engine_is_built_and_registered_with_a_gpu(digits, tmp_path):
    from xinfer_sdk.converters.tensorrt_engine import unavailable_reason

    why = unavailable_reason()
    if why:
        pytest.skip(f"TensorRT not usable here: {why}")
    bundle = xs.build(digits.onnx, "a10", "fp16", eval=digits.eval, output=tmp_path / "g.xinfer")
    roles = {a.role for a in bundle.manifest.artifacts.values()}
    assert {"model", "reference", "engine", "timing_cache"} <= roles
    engine = bundle.manifest.artifacts_by_role("engine")[0]
    assert engine.path.startswith("engines/") and engine.meta["precision"] == "fp16"
    assert [s.status for s in bundle.manifest.steps if s.name == "tensorrt"] == ["ok"]


def test_large_graphs_keep_weights_in_external_data(digits, tmp_path, monkeypatch):
    """Past protobuf's 2 GB a graph keeps its weights in '<file>.data'; forced here with a tiny threshold."""
    from xinfer_sdk.converters import graph

    monkeypatch.setattr(graph, "EXTERNAL_DATA_BYTES", 1000)
    bundle = xs.build(digits.onnx, "cpu", "int8", calib=digits.calib, eval=digits.eval, output=tmp_path / "x.xinfer")
    roles = {a.path: a.role for a in bundle.manifest.artifacts.values()}
    assert roles == {"model.onnx": "model", "model.onnx.data": "model_data", "reference.onnx": "reference",
                     "reference.onnx.data": "reference_data"}
    assert (bundle.root / "model.onnx").stat().st_size < 10_000  # the weights are in the .data file
    sess = ort.InferenceSession(str(bundle.model_file), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": np.zeros((2, 64), np.float32)})[0].shape == (2, 10)
    assert bundle.manifest.accuracy["passed"]
