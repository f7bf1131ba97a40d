"""The CLI as a user (and CI) runs it: --json output, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys


def test_version(cli_run):
    code, out, _ = cli_run("--version")
    assert code == 0 and "0." in out


def test_profiles_show_t4_json_has_real_figures_and_sources(cli_run):
    code, out, err = cli_run("profiles", "show", "t4", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["memory_gb"] == 16 and d["memory_bandwidth_gbps"] == 300
    assert d["peak_tflops"]["fp16"] == 65 and d["peak_tflops"]["int8"] == 130
    assert d["sm"] == "sm_75" and d["peak_tflops"]["bf16"] is None and d["peak_tflops"]["fp8"] is None
    assert set(d["precisions"]) == {"int8", "fp16", "fp32"}
    assert d["sources"]["peak_tflops"][0].startswith("https://")


def test_profiles_list_json(cli_run):
    code, out, _ = cli_run("profiles", "list", "--json")
    names = {p["name"] for p in json.loads(out)["profiles"]}
    assert code == 0 and {"cpu", "t4", "h200", "jetson-orin-nano-8gb"} <= names


def test_profiles_detect_here_is_cpu(cli_run):
    code, out, _ = cli_run("profiles", "detect", "--json")
    assert code == 0 and json.loads(out)["profile"] == "cpu"


def test_set_override_shows_in_output(cli_run):
    code, out, _ = cli_run("profiles", "show", "t4", "--set", "batch.max_batch_size=16", "--json")
    assert code == 0 and json.loads(out)["batch"]["max_batch_size"] == 16


def test_broken_profile_is_one_line_and_exit_2(cli_run, tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: broken\nextends: t4\nbatch: {max_batch_size: many}\n")
    code, out, err = cli_run("profiles", "validate", str(bad))
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "broken.yaml" in lines[0] and "batch.max_batch_size" in lines[0]
    assert "Traceback" not in err + out


def test_validate_good_file(cli_run, tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("name: mine\nextends: l4\nprice_per_hour_usd: 0.8\n")
    code, out, _ = cli_run("profiles", "validate", str(good))
    assert code == 0 and "ok" in out


def test_unknown_profile_exit_2_one_line(cli_run):
    code, out, err = cli_run("profiles", "show", "z80")
    assert code == 2 and err.count("\n") == 1 and "unknown profile 'z80'" in err


def test_profiles_dir_option(cli_run, tmp_path):
    (tmp_path / "edge.yaml").write_text("name: edge\nextends: jetson-orin-nano-8gb\n")
    code, out, _ = cli_run("--profiles-dir", str(tmp_path), "profiles", "show", "edge", "--json")
    assert code == 0 and json.loads(out)["memory_gb"] == 8


def test_usage_error_is_exit_2(cli_run):
    code, _, err = cli_run("profiles", "show")
    assert code == 2 and "Missing argument" in err


def test_doctor_reports_working_cpu_provider_and_no_fake_gpu(cli_run):
    code, out, _ = cli_run("doctor", "--json")
    d = json.loads(out)
    assert code == 0
    assert "CPUExecutionProvider" in d["onnxruntime"]["working"]
    assert "CUDAExecutionProvider" not in d["onnxruntime"]["working"]
    assert d["backends"]["onnxruntime"]["ok"] is True
    assert d["profile"]["profile"] == "cpu"


def test_doctor_flags_onnxruntime_clash():
    from xinfer_sdk.doctor import problems

    found = problems({"onnxruntime": "1.20", "onnxruntime-gpu": "1.20"}, {"listed": [], "working": []})
    assert any("overwrite each other" in p for p in found)


def test_console_script_runs_as_a_process():
    p = subprocess.run([sys.executable, "-m", "xinfer_sdk", "profiles", "show", "t4", "--json"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and json.loads(p.stdout)["name"] == "t4"
