"""Model control with real models (ONNX Runtime): explicit load / unload, version policies, the index, and a
model refused by the memory budget (issue 14, item 2)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from onnx_models import make_mlp_onnx

from xinfer_sdk.errors import MemoryBudgetError, ModelNotFound
from xinfer_sdk.server.config import build_control, read_serve_config
from xinfer_sdk.server.service import Service


def _repo(tmp_path, versions=(1,), name="mlp"):
    for v in versions:
        (tmp_path / name / str(v)).mkdir(parents=True)
        make_mlp_onnx(tmp_path / name / str(v) / "model.onnx", seed=v)
    return tmp_path


def _control(repo, mode="explicit", **kw):
    return build_control(read_serve_config(None, [str(repo)]), mode=mode, profile="cpu", threads=1, **kw)


def _serve(control):
    models, seconds = control.initial()
    svc = Service(models, load_seconds=seconds)
    control.attach(svc)
    return svc


def test_explicit_mode_starts_with_only_the_named_models(tmp_path):
    _repo(tmp_path, name="a")
    _repo(tmp_path, name="b")
    svc = _serve(_control(tmp_path, load_names=["a"]))
    try:
        assert sorted(svc.models) == ["a"]
        assert {(e["name"], e["state"], e["reason"]) for e in svc.repository_index()} == {
            ("a", "READY", ""), ("b", "UNAVAILABLE", "unloaded")}
        assert svc.repository_index(ready_only=True) == [{"name": "a", "version": "1", "state": "READY",
                                                          "reason": ""}]
    finally:
        svc.close()


def test_load_then_unload_by_request(tmp_path):
    _repo(tmp_path)
    svc = _serve(_control(tmp_path))

    async def go():
        svc.control.start()
        await svc.load_model("mlp")
        loaded = sorted(svc.models)
        await svc.unload_model("mlp")
        return loaded

    try:
        assert asyncio.run(go()) == ["mlp"]
        assert svc.models == {}
        with pytest.raises(ModelNotFound, match="unknown model 'mlp'"):
            svc.get("mlp")
    finally:
        svc.close()


def test_policy_all_serves_every_version_and_routes_by_version(tmp_path):
    _repo(tmp_path, versions=(1, 2))
    (tmp_path / "mlp" / "config.yaml").write_text("version_policy: all\n")
    svc = _serve(_control(tmp_path, mode="none"))
    try:
        assert sorted(svc.versions["mlp"]) == ["1", "2"]
        assert svc.get("mlp").version == "2" and svc.get("mlp", "1").version == "1"
        assert svc.get("mlp").config["version_policy"] == {"all": {}}
        assert svc.get("mlp", "1").metadata["versions"] == ["1", "2"]
        x = {"input": np.ones((1, 8), np.float32)}
        a, b = svc.get("mlp", "1").model.infer(x), svc.get("mlp", "2").model.infer(x)
        assert not np.allclose(a["output"], b["output"])
        with pytest.raises(ModelNotFound, match=r"no version '3' \(versions: 1, 2\)"):
            svc.get("mlp", "3")
    finally:
        svc.close()


def test_a_model_too_big_for_the_device_is_refused_with_the_arithmetic(tmp_path):
    _repo(tmp_path)
    control = build_control(read_serve_config(None, [str(tmp_path)]), mode="none", profile="cpu", threads=1,
                            overrides=["memory_gb=0.00001", "memory.reserve_gb=0"])
    with pytest.raises(MemoryBudgetError) as info:
        control.initial()
    text = str(info.value)
    assert "model 'mlp' does not fit the device memory: weights" in text
    assert "usable on cpu (profile cpu:" in text and "max_batch_size" in text


def test_a_failed_reload_keeps_the_old_version_serving(tmp_path):
    _repo(tmp_path)
    svc = _serve(_control(tmp_path, load_names=["mlp"]))
    (tmp_path / "mlp" / "2").mkdir()
    (tmp_path / "mlp" / "2" / "model.onnx").write_bytes(b"not an onnx model")

    async def go():
        svc.control.start()
        with pytest.raises(Exception, match="not a loadable ONNX model"):
            await svc.load_model("mlp")

    try:
        asyncio.run(go())
        assert svc.get("mlp").version == "1" and svc.get("mlp").ready
        assert svc.control.failed["mlp"]
    finally:
        svc.close()
