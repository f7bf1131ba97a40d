"""`xinfer-sdk plan` with prices: the bill on stdout, --json's bill section, --price errors, the cost chart."""

from __future__ import annotations

import json
import struct
import sys
import textwrap

import pytest

pytest.importorskip("onnx")
pytest.importorskip("click")

from test_bill import GPU1, NODE8  # noqa: E402

ARGS = ("--p99", "5ms", "--target-qps", "250000")


@pytest.fixture
def user_dir(tmp_path):
    d = tmp_path / "profiles"
    d.mkdir()
    (d / "gpu1.yaml").write_text(textwrap.dedent(GPU1))
    (d / "node8.yaml").write_text(textwrap.dedent(NODE8))
    return d


def one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_bill_names_the_cheapest_with_its_arithmetic(cli_run, mlp_file, user_dir):
    code, out, err = cli_run("--profiles-dir", str(user_dir), "plan", str(mlp_file), "-p", "gpu1,node8,jetson-agx-orin-64gb", *ARGS,
                             "--explain")
    assert code == 0, err
    assert "Comparison at 250,000 req/s" in out and "1 x aws big.48xlarge" in out
    cheapest = next(ln for ln in out.splitlines() if ln.startswith("cheapest:"))
    assert cheapest.startswith("cheapest: gpu1: ") and "x $1/GPU-h (user price) = $" in cheapest
    assert cheapest.endswith("per 1M") and "250,000 req/s -> $" in cheapest
    assert any(ln.startswith("fewest devices: ") for ln in out.splitlines())
    assert "not ranked for cost (a Jetson module is bought, not rented by the hour): jetson-agx-orin-64gb; give " \
           "--price NAME=USD_PER_GPU_HOUR" in out
    # --explain's cost line carries the same sum
    assert "aws big.48xlarge (8 GPUs each" in out.split("Comparison")[0]


def test_json_carries_the_bill(cli_run, mlp_file, user_dir):
    code, out, err = cli_run("--profiles-dir", str(user_dir), "plan", str(mlp_file), "-p", "gpu1,node8", *ARGS,
                             "--price", "gpu1=2.5", "--json")
    assert code == 0, err
    data = json.loads(out)
    bill = data["bill"]
    lines = {ln["profile"]: ln for ln in bill["lines"]}
    n = lines["gpu1"]["devices"]
    assert lines["gpu1"]["usd_per_gpu_hour"] == 2.5 and lines["gpu1"]["usd_per_hour"] == pytest.approx(2.5 * n)
    assert lines["node8"]["instances"] == 1 and lines["node8"]["usd_per_hour"] == pytest.approx(7.2)
    assert bill["cheapest"]["profile"] == "node8" and data["best"]["cheapest"] == "node8"  # 7.20 < 2.5 x n
    assert bill["cheapest"]["usd_per_million"] == pytest.approx(0.008)
    assert bill["basis"] == "target" and bill["target_qps"] == 250000.0 and data["skipped"] == []


@pytest.mark.parametrize("price, needle", [
    ("l5=1", "no profile named 'l5'"),
    ("t4=1", "'t4' is not among the planned profiles"),
    ("gpu1=free", "PROFILE=USD_PER_GPU_HOUR"),
    ("gpu1", "PROFILE=USD_PER_GPU_HOUR"),
])
def test_price_errors_are_one_line_and_exit_2(cli_run, mlp_file, user_dir, price, needle):
    code, out, err = cli_run("--profiles-dir", str(user_dir), "plan", str(mlp_file), "-p", "gpu1", *ARGS,
                             "--price", price)
    assert code == 2 and needle in one_line(err)


def test_an_unplannable_profile_is_reported_and_the_rest_planned(cli_run, mlp_file):
    code, out, err = cli_run("plan", str(mlp_file), "-p", "t4,h100-sxm", "--precision", "fp8", *ARGS)
    assert code == 0, err
    assert any(ln.startswith("t4: not planned: ") and "FP8" in ln for ln in out.splitlines())
    assert "h100-sxm" in out.split("Comparison")[1]


def test_unknown_profile_in_a_list_is_still_an_error(cli_run, mlp_file):
    code, out, err = cli_run("plan", str(mlp_file), "-p", "t4,no-such-gpu", *ARGS)
    assert code == 2 and "no-such-gpu" in one_line(err)


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plot_draws_cost_against_p99_when_priced(cli_run, mlp_file, user_dir, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "cost.png"
    code, out, err = cli_run("--profiles-dir", str(user_dir), "plan", str(mlp_file), "-p", "gpu1,node8", *ARGS,
                             "--plot", str(png))
    assert code == 0, err
    assert "chart written" in err
    w, h = png_size(png)
    assert w / h > 3  # three panels side by side (18 in wide); without a price two (12 in: under 2.5)


def test_plot_without_matplotlib_names_the_package(cli_run, mlp_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, out, err = cli_run("plan", str(mlp_file), "-p", "t4", *ARGS, "--plot", str(tmp_path / "x.png"))
    line = one_line(err)
    assert code == 2 and "matplotlib" in line and not (tmp_path / "x.png").exists()
