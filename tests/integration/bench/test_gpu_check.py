"""bench/gpu_check.sh: its CPU-side self-check passes here, and its report reads what the GPU steps write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_self_check_runs_here_and_collects_the_gpu_tests(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--self-check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("gpu_check self-check: ") and line.endswith("OK")
    assert int(line.split(": ")[1].split()[0]) >= 15  # the gpu suite collects (ORT TRT EP, workers, INT8, NVML...)


def test_self_check_fails_when_something_is_missing(tmp_path):
    # a python without our package installed: the self-check names the failing imports and exits 1
    bare = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if Path(p).is_file() and subprocess.run(
        [p, "-c", "import xinfer_sdk"], cwd=tmp_path, capture_output=True).returncode != 0), None)
    if bare is None:
        pytest.skip("no python3 without xinfer-sdk on this machine to show the failure with")
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=bare)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--self-check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "problem(s)" in proc.stdout and "import xinfer_sdk" in proc.stdout


def test_report_reads_the_pieces(tmp_path):
    out = tmp_path
    (out / "env-trt10.json").write_text(json.dumps({"tag": "trt10", "nvidia_smi": ["0, NVIDIA H200, 570.1, 9.0"],
                                                    "versions": {"tensorrt-cu12": "10.13.3"},
                                                    "tensorrt_unavailable_reason": None, "ort_providers": {}}))
    (out / "engines-trt10.json").write_text(json.dumps({
        "tag": "trt10",
        "fp16": {"status": "ok", "layer_precisions": {"verdict": "ok", "reason": "2 of 2 FLOP layers in FP16"}},
        "bf16": {"status": "failed", "error": "ConversionError: no FLOP layer runs in BF16"}}))
    (out / "bench-trt10.json").write_text(json.dumps({
        "median_ms": {"fp32/b32": 0.2, "fp16/b32": 0.1}, "samples_per_s": {"fp32/b32": 160000, "fp16/b32": 320000},
        "ratio_to_fp32": {"fp32/b32": 1.0, "fp16/b32": 2.0}, "errors": {}}))
    (out / "pytest-trt10.xml").write_text(
        '<testsuites><testsuite name="pytest"><testcase classname="tests.gpu.test_tensorrt_gpu" name="test_a"/>'
        '<testcase classname="tests.gpu.test_gpu_paths" name="test_b"><failure message="boom"/></testcase>'
        '<testcase classname="tests.gpu.test_gpu_paths" name="test_c"><skipped message="one GPU"/></testcase>'
        '</testsuite></testsuites>')
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "report", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = (out / "gpu-report.md").read_text()
    assert "## Pass `trt10`" in text and "NVIDIA H200" in text and "tensorrt-cu12 10.13.3" in text
    assert "pytest -m gpu: 1 passed, 1 failed, 1 skipped" in text and "| test_gpu_paths::test_b | failed | boom |" in text
    assert "| fp16 | ok | ok | 2 of 2 FLOP layers in FP16 |" in text and "no FLOP layer runs in BF16" in text
    assert "| fp16/b32 | 0.1 | 320000 | 2.0x |" in text
