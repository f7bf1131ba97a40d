"""Loading a bundle that failed its accuracy gate: the message names only ways out that exist."""

from __future__ import annotations

import re

import pytest

import xinfer_sdk as xs
from xinfer_sdk.bundle import open_bundle, save_manifest
from xinfer_sdk.errors import BundleError


def test_failed_gate_message_names_only_real_options(cli_run, digits, tmp_path):
    root = xs.build(digits.onnx, "cpu", "fp32", output=tmp_path / "g.xinfer").root
    b = open_bundle(root)
    b.manifest.accuracy = {"passed": False}
    save_manifest(root, b.manifest)
    with pytest.raises(BundleError, match="failed its accuracy gate") as info:
        xs.load(root, profile="cpu")
    text = str(info.value)
    assert "allow_failed_gate=True" in text
    code, help_text, _ = cli_run("serve", "--help")
    assert code == 0
    for flag in re.findall(r"--[a-z][a-z-]+", text):
        assert flag in help_text, f"the message names {flag}, which `serve` does not have"
    code, _, err = cli_run("serve", str(root), "--profile", "cpu", "--port", "0", "--no-grpc")
    assert code == 2 and "failed its accuracy gate" in err
    for flag in re.findall(r"--[a-z][a-z-]+", err):
        assert flag in help_text, f"the message names {flag}, which `serve` does not have"
