"""Every user mistake is one clear line and exit 2; a failed accuracy gate is exit 3 with the report."""

from __future__ import annotations

import json
import re

import yaml

BROKEN = '''
import torch

class Svd(torch.nn.Module):
    def forward(self, x):
        return torch.linalg.svd(x)[1]

class Baked(torch.nn.Module):
    def forward(self, x):
        n = int(x.shape[1])  # a Python number: the tracer freezes it at the example's size
        return x * torch.arange(n, dtype=x.dtype)

def svd():
    return Svd()

def baked():
    return Baked()
'''


def test_int8_without_calibration_data(cli_run, digits, tmp_path, one_error_line):
    code, out, err = cli_run("build", str(digits.onnx), "--profile", "t4", "--precision", "int8", "-q",
                             "-o", str(tmp_path / "x.xinfer"))
    assert code == 2 and "INT8 needs calibration data" in one_error_line(err) and "--calib" in err
    assert not (tmp_path / "x.xinfer").exists()


def test_wrong_input_name_in_shapes(cli_run, transformer, tmp_path, one_error_line):
    code, _, err = cli_run("build", str(transformer.onnx), "--profile", "cpu", "-q", "--shapes", "tokens:1x8..8x64",
                           "-o", str(tmp_path / "x.xinfer"))
    line = one_error_line(err)
    assert code == 2 and "no input 'tokens'" in line and "input_ids, attention_mask" in line


def test_corrupt_onnx(cli_run, digits, tmp_path, one_error_line):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(digits.onnx.read_bytes()[:300])
    code, _, err = cli_run("build", str(bad), "--profile", "cpu", "-q", "-o", str(tmp_path / "x.xinfer"))
    assert code == 2 and "not a readable ONNX file" in one_error_line(err)


def test_models_that_do_not_export(cli_run, tmp_path, one_error_line):
    src = tmp_path / "broken.py"
    src.write_text(BROKEN)
    code, _, err = cli_run("build", f"{src}:svd", "--profile", "cpu", "-q", "--shapes", "x:1x4x4..8x4x4",
                           "-o", str(tmp_path / "a.xinfer"))
    assert code == 2 and "torch.onnx.export failed" in one_error_line(err) and "svd" in err
    code, _, err = cli_run("build", f"{src}:baked", "--profile", "cpu", "-q", "--shapes", "x:1x4..8x8..16x16",
                           "-o", str(tmp_path / "b.xinfer"))
    assert code == 2 and "specialized to the example shapes" in one_error_line(err)
    code, _, err = cli_run("build", f"{src}:svd", "--profile", "cpu", "-q", "-o", str(tmp_path / "c.xinfer"))
    assert code == 2 and "no example inputs" in one_error_line(err) and "--shapes" in err


def test_pickled_pt_is_refused(cli_run, tmp_path, one_error_line):
    import torch

    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(3, 2), path)
    code, _, err = cli_run("build", str(path), "--profile", "cpu", "-q")
    line = one_error_line(err)
    assert code == 2 and "never unpickles" in line and "torch.export.save" in line


def test_fp8_refusals(cli_run, digits, one_error_line):
    code, _, err = cli_run("build", str(digits.onnx), "--profile", "t4", "--precision", "fp8", "-q")
    assert code == 2 and "T4 (sm_75) has no FP8 tensor cores" in one_error_line(err)
    code, _, err = cli_run("build", str(digits.onnx), "--profile", "h100-sxm", "--precision", "fp8", "-q")
    assert code == 2 and "FP8 needs calibration data" in one_error_line(err) and "--calib" in err


def test_memory_budget_refuses_with_numbers_and_a_suggestion(cli_run, conv_model, tmp_path, one_error_line):
    code, _, err = cli_run("build", str(conv_model), "--profile", "t4", "-q", "-o", str(tmp_path / "x.xinfer"))
    line = one_error_line(err)
    assert code == 2 and "does not fit profile t4 at fp16" in line and "GB usable" in line
    fits = int(re.search(r"--max-batch-size (\d+)", line).group(1))
    assert 1 <= fits < 32
    code, _, err = cli_run("build", str(conv_model), "--profile", "jetson-orin-nano-4gb", "-q", "--json")
    assert code == 2 and "does not fit profile jetson-orin-nano-4gb" in err
    assert "--precision int8" in err


def test_output_that_is_not_a_bundle_is_not_overwritten(cli_run, digits, tmp_path, one_error_line):
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    code, _, err = cli_run("build", str(digits.onnx), "--profile", "cpu", "-q", "-o", str(tmp_path / "keep"))
    assert code == 2 and "is not a bundle" in one_error_line(err)
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine"


def test_failed_gate_exits_3_with_the_report_and_keeps_the_bundle(cli_run, digits, tmp_path, one_error_line):
    out_dir = tmp_path / "gate.xinfer"
    code, out, err = cli_run("build", str(digits.onnx), "--profile", "cpu", "--precision", "int8", "-q",
                             "--calib", str(digits.calib), "--eval", str(digits.eval), "--min-cosine", "0.9999999",
                             "-o", str(out_dir))
    line = one_error_line(err)
    assert code == 3 and "accuracy gate failed for int8" in line and "cosine" in line
    assert "Accuracy gate: FAILED" in out and "true accuracy on logits" in out
    manifest = yaml.safe_load((out_dir / "xinfer.yaml").read_text())
    assert manifest["accuracy"]["passed"] is False and manifest["accuracy"]["thresholds"]["min_cosine"] == 0.9999999
    assert [s["status"] for s in manifest["steps"] if s["name"] == "accuracy_gate"] == ["failed"]
    code, out, _ = cli_run("build", str(digits.onnx), "--profile", "cpu", "--precision", "int8", "-q", "--json",
                           "--calib", str(digits.calib), "--min-top1", "1", "--min-cosine", "0.9999999",
                           "-o", str(out_dir))
    report = json.loads(out)
    assert code == 3 and report["exit_code"] == 3 and report["type"] == "AccuracyGateError"
    assert report["accuracy"]["outputs"]["logits"]["cosine"] < 0.9999999


def test_bad_threshold_values(cli_run, digits, one_error_line):
    code, _, err = cli_run("build", str(digits.onnx), "--profile", "cpu", "-q", "--max-accuracy-drop", "-1")
    assert code == 2 and "threshold max_accuracy_drop=-1.0" in one_error_line(err)
