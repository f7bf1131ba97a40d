"""The model name a bundle carries: ``--name`` wins, else the output folder's stem, else the model file's stem."""

from __future__ import annotations

import json

import xinfer_sdk as xs


def test_name_follows_the_output_folder(cli_run, digits, tmp_path):
    out_dir = tmp_path / "mlp.xinfer"
    code, out, err = cli_run("build", str(digits.onnx), "--profile", "cpu", "--precision", "fp32", "-o", str(out_dir),
                             "--json")
    assert code == 0, err
    assert json.loads(out)["manifest"]["name"] == "mlp"
    assert xs.open_bundle(out_dir).manifest.name == "mlp"


def test_explicit_name_wins_and_the_default_output_keeps_the_model_stem(digits, tmp_path, monkeypatch):
    named = xs.build(digits.onnx, "cpu", "fp32", output=tmp_path / "mlp.xinfer", name="classifier")
    assert named.manifest.name == "classifier"
    monkeypatch.chdir(tmp_path)
    default = xs.build(digits.onnx, "cpu", "fp32")
    assert default.root == tmp_path / (digits.onnx.stem + ".xinfer") and default.manifest.name == digits.onnx.stem
