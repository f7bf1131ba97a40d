"""Issue 18 item 13: a server config.yaml with a wrong type is one line naming the key and the expected type
(exit 2, not "internal error"); unknown keys in batch configs and options= are errors naming the key, with the
nearest known one."""

from __future__ import annotations

import pytest

from xinfer_sdk.errors import EXIT_USER, UserError
from xinfer_sdk.runtime.keys import check_options
from xinfer_sdk.server.config import read_serve_config


def _read(tmp_path, text, cli=()):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    return read_serve_config(cfg, list(cli))


@pytest.mark.parametrize("text,fragment", [
    ("server: {port: abc}\nmodels: [{path: a}]\n", "server.port: expected a port number 0-65535, got 'abc'"),
    ("server: {port: 70000}\nmodels: [{path: a}]\n", "server.port: expected a port number"),
    ("server: {port: true}\nmodels: [{path: a}]\n", "server.port: expected a port number"),
    ("server: {grpc_port: x}\nmodels: [{path: a}]\n", "server.grpc_port: expected a port number 0-65535 or null"),
    ("server: {host: 8}\nmodels: [{path: a}]\n", "server.host: expected text, got 8"),
    ("models: [{path: a, threads: two}]\n", "models[0].threads: expected a whole number >= 1"),
    ("defaults: {threads: 0}\nmodels: [{path: a}]\n", "defaults.threads: expected a whole number >= 1"),
    ("models: [{path: a, device: tpu}]\n", "models[0].device: device 'tpu' is not understood"),
])
def test_a_wrong_type_names_the_key_and_the_expected_type(tmp_path, text, fragment):
    with pytest.raises(UserError) as info:
        _read(tmp_path, text)
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("text,fragment", [
    ("server: {prot: 1}\nmodels: [{path: a}]\n", "server.prot: unknown key; did you mean 'port'?"),
    ("modles: []\n", "modles: unknown key; did you mean 'models'?"),
    ("modles: []\nserver: {port: 1}\n", "unknown top-level key 'modles'; did you mean 'models'?"),
    ("models: [{path: a, thread: 2}]\n", "models[0].thread: unknown key; did you mean 'threads'?"),
    ("defaults: {devices: cpu}\nmodels: [{path: a}]\n", "defaults.devices: unknown key; did you mean 'device'?"),
    ("models: [{path: a, batch: {max_batch_sise: 8}}]\n", "batch.max_batch_sise: unknown key; did you mean "
                                                          "'max_batch_size'?"),
    ("defaults: {batch: {max_batch_dalay: 1ms}}\nmodels: [{path: a}]\n", "did you mean 'max_batch_delay'?"),
    ("models: [{path: a, options: {tf23: true}}]\n", "models[0].options.tf23: unknown key; did you mean 'tf32'?"),
    ("models: [{path: a, backend: tensorrt, options: {tf32: true}}]\n", "backend tensorrt takes no options"),
])
def test_an_unknown_key_is_an_error_with_the_nearest_one(tmp_path, text, fragment):
    with pytest.raises(UserError) as info:
        _read(tmp_path, text)
    assert fragment in str(info.value)


def test_a_seed_batch_file_with_a_typo_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"batch_sizee: unknown key; did you mean 'batch_size'\?"):
        _read(tmp_path, "batch_sizee: 8\n", ["m.onnx"])


def test_the_config_reports_the_normalised_device(tmp_path):
    c = _read(tmp_path, "defaults: {device: gpu}\nmodels: [{path: a}, {path: b, device: 'GPU:1'}]\n")
    assert [e.device for e in c.models] == ["cuda:0", "cuda:1"]


def test_options_typos_are_refused_by_load_too():
    check_options({"tf32": True, "spinning": False})
    check_options({"fp16": True}, "migraphx")
    with pytest.raises(UserError, match=r"options\.spining: unknown key; did you mean 'spinning'\?"):
        check_options({"spining": False})
    with pytest.raises(UserError, match="options= expects a dict"):
        check_options(["tf32"])


def test_load_refuses_an_options_typo(tmp_path):
    pytest.importorskip("onnxruntime")
    from onnx_models import make_mlp_onnx

    import xinfer_sdk as xs

    make_mlp_onnx(tmp_path / "mlp.onnx")
    with pytest.raises(UserError, match="did you mean 'tf32'"):
        xs.load(tmp_path / "mlp.onnx", profile="cpu", options={"tf_32": True})


def test_load_refuses_a_batch_config_typo(tmp_path):
    pytest.importorskip("onnxruntime")
    from onnx_models import make_mlp_onnx

    import xinfer_sdk as xs

    make_mlp_onnx(tmp_path / "mlp.onnx")
    (tmp_path / "config.yaml").write_text("batch_size: 8\nmax_batch_dealy: 1ms\n")
    with pytest.raises(UserError, match="max_batch_dealy: unknown key; did you mean 'max_batch_delay'"):
        xs.load(tmp_path / "mlp.onnx", profile="cpu", config=tmp_path / "config.yaml")


def test_serve_with_a_bad_port_exits_2_with_one_line(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("click")
    (tmp_path / "config.yaml").write_text("server: {port: abc}\nmodels: [{path: a.onnx}]\n")
    r = subprocess.run([sys.executable, "-m", "xinfer_sdk", "serve", "--config", str(tmp_path / "config.yaml")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == EXIT_USER, r.stderr
    assert "server.port: expected a port number" in r.stderr and "internal error" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
