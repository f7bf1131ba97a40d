"""Rates print as people write them: `100,000 req/s`, never `1e+05 req/s`."""

from __future__ import annotations

import re

import pytest

from xinfer_sdk.planning.explain import rate

pytest.importorskip("onnx")
pytest.importorskip("click")


@pytest.mark.parametrize("value, text", [(100_000.0, "100,000"), (123_456.7, "123,457"), (2_500_000, "2,500,000"),
                                         (4000, "4,000"), (999.5, "1,000"), (150.25, "150"), (12.3456, "12.35"),
                                         (0.5, "0.5"), (None, "-")])
def test_rate_text(value, text):
    assert rate(value) == text


def test_plan_prints_large_rates_with_thousands_separators(cli_run, mlp_file):
    code, out, err = cli_run("plan", str(mlp_file), "-p", "l4,t4", "--p99", "10ms", "--target-qps", "1000000",
                             "--explain")
    assert code == 0, err
    assert not re.search(r"\de\+\d", out), [ln for ln in out.splitlines() if re.search(r"\de\+\d", ln)]
    assert "1,000,000 req/s" in out
