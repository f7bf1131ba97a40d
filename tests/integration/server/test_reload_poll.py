"""--model-control poll: the repository read again brings the served set in step with it (issue 14, item 2).
Each step calls one poll on the server's loop (no waiting for the interval)."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
from onnx_models import make_mlp_onnx

from xinfer_sdk.server.config import build_control, read_serve_config
from xinfer_sdk.server.runner import Server

X = {"input": np.ones((1, 8), np.float32)}


def _model(folder, seed):
    folder.mkdir(parents=True, exist_ok=True)
    make_mlp_onnx(folder / "model.onnx", seed=seed)


def test_poll_adds_reloads_and_removes_models(tmp_path):
    _model(tmp_path / "a", 0)
    control = build_control(read_serve_config(None, [str(tmp_path)]), mode="poll", poll_interval=3600,
                            profile="cpu", threads=1)
    models, seconds = control.initial()
    srv = Server(models, port=0, grpc_port=None, gpu_metrics=False, load_seconds=seconds, control=control)
    srv.start_background()
    svc = srv.service

    def poll():
        asyncio.run_coroutine_threadsafe(control.poll_once(), srv.loop).result(60)

    try:
        first = svc.get("a").model.infer(X)["output"]
        poll()
        same = svc.get("a")  # nothing changed: nothing reloaded
        _model(tmp_path / "b", 1)
        poll()
        assert sorted(svc.models) == ["a", "b"] and svc.get("a") is same
        _model(tmp_path / "a", 2)  # version 1 of 'a' rewritten in place: reloaded
        poll()
        assert svc.get("a") is not same and svc.get("a").version == "1"
        assert not np.allclose(svc.get("a").model.infer(X)["output"], first)
        shutil.rmtree(tmp_path / "b")
        poll()
        assert sorted(svc.models) == ["a"]
        assert [e["name"] for e in svc.repository_index()] == ["a"]
    finally:
        assert srv.stop() == 0


def test_poll_keeps_serving_when_a_new_version_is_broken(tmp_path):
    _model(tmp_path / "a" / "1", 0)
    control = build_control(read_serve_config(None, [str(tmp_path)]), mode="poll", poll_interval=3600,
                            profile="cpu", threads=1)
    models, seconds = control.initial()
    srv = Server(models, port=0, grpc_port=None, gpu_metrics=False, load_seconds=seconds, control=control)
    srv.start_background()
    try:
        (tmp_path / "a" / "2").mkdir()
        (tmp_path / "a" / "2" / "model.onnx").write_bytes(b"half a file")
        asyncio.run_coroutine_threadsafe(control.poll_once(), srv.loop).result(60)
        assert srv.service.get("a").version == "1" and srv.service.get("a").ready
        index = srv.service.repository_index()
    finally:
        srv.stop()
    assert index[0]["version"] == "1" and index[0]["state"] == "READY"
    assert index[1]["state"] == "UNAVAILABLE" and "not a loadable ONNX model" in index[1]["reason"]
    assert "still serving version(s) 1" in index[1]["reason"]
