"""serve's config.yaml and NAME=PATH arguments."""

from __future__ import annotations

import pytest

from xinfer_sdk.errors import UserError
from xinfer_sdk.server.config import parse_model_arg, parse_size, read_serve_config


def test_sizes():
    assert parse_size("64MiB") == 64 << 20 and parse_size("10MB") == 10_000_000 and parse_size(1024) == 1024
    assert parse_size("512k") == 512_000
    with pytest.raises(UserError, match="--max-body"):
        parse_size("lots", field="--max-body")


def test_name_equals_path():
    assert parse_model_arg("resnet=models/r.xinfer").name == "resnet"
    e = parse_model_arg("models/r.xinfer")
    assert e.name is None and e.path == "models/r.xinfer"


def test_server_config_merges_defaults_and_resolves_paths(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("server: {port: 9000, drain_timeout: 5s, max_body: 1MiB}\n"
                   "defaults: {device: cpu, threads: 2, batch: {max_batch_size: 16, max_batch_delay: 1ms}}\n"
                   "models:\n  - {name: a, path: a.onnx}\n  - {name: b, path: /abs/b.onnx, threads: 1,"
                   " batch: {max_batch_size: 4}}\n")
    c = read_serve_config(cfg, ["c=/x/c.onnx"])
    assert c.server == {"port": 9000, "drain_timeout": 5.0, "max_body": 1 << 20}
    by = {e.name: e for e in c.models}
    assert by["a"].path == str(tmp_path / "a.onnx") and by["a"].threads == 2 and by["a"].device == "cpu"
    assert by["b"].threads == 1 and by["b"].batch == {"max_batch_size": 4, "max_batch_delay": "1ms"}
    assert by["c"].batch == {"max_batch_size": 16, "max_batch_delay": "1ms"}  # defaults apply to CLI bundles too


def test_seed_batch_config_applies_to_command_line_bundles(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("batch_size: 8\nmax_workers: 2\n")
    c = read_serve_config(cfg, ["m.onnx"])
    assert c.models[0].policy_file == str(cfg)


@pytest.mark.parametrize("text,fragment", [
    ("models:\n  - {name: a}\n", "models[0].path"),
    ("models:\n  - {path: a.onnx, colour: red}\n", "models[0].colour"),
    ("server: {prot: 1}\nmodels: [{path: a}]\n", "server.prot"),
    ("wat: 1\nmodels: []\n", "unknown top-level"),
    ("models: 3\n", "expected a list"),
    ("server: {port: 1}\n", "no models"),
    ("[unclosed", "not valid YAML"),
])
def test_config_errors_name_the_field(tmp_path, text, fragment):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    with pytest.raises(UserError) as ei:
        read_serve_config(cfg)
    assert fragment in str(ei.value)


def test_nothing_to_serve():
    with pytest.raises(UserError, match="nothing to serve"):
        read_serve_config(None, [])


def test_grafana_dashboard_uses_only_exported_metric_names():
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    dash = json.loads((root / "deploy" / "grafana" / "xinfer-dashboard.json").read_text())
    used = set()
    for p in dash["panels"]:
        for t in p["targets"]:
            used |= set(re.findall(r"xinfer_[a-z_]+", t["expr"]))
    exported = set(re.findall(r"`(xinfer_[a-z_]+)`", (root / "docs" / "metrics.md").read_text()))
    suffixes = ("_bucket", "_count", "_sum")
    base = {u[: -len(s)] if any(u.endswith(s) for s in suffixes) else u for u in used for s in suffixes if u.endswith(s)}
    base |= {u for u in used if not u.endswith(suffixes)}
    assert used and base <= exported, base - exported
