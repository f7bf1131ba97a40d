"""The shipped alert rules: generated from xinfer_sdk/deploy/alerts.py (no drift), valid for `promtool check
rules`, their `promtool test rules` cases pass (and fail when a threshold changes), every metric they read is one
the server exports, every runbook link lands on a heading of docs/metrics.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from xinfer_sdk.deploy.alerts import AlertSettings, anchor, rule_groups, rules_yaml
from xinfer_sdk.errors import UserError

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "deploy" / "prometheus" / "xinfer-alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "xinfer-alerts.test.yaml"
ASKED_FOR = {"XinferP99OverSLO", "XinferQueueGrowing", "XinferServerErrors", "XinferRequestsRejected",
             "XinferClientErrors", "XinferGpuTemperatureHigh", "XinferGpuMemoryHigh", "XinferReplicaNotReady"}


def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool is not installed (Debian package 'prometheus'; bash .ci/install-system-deps.sh)")
    return exe


def rules() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"][0]["rules"]


def test_shipped_file_is_what_the_generator_writes():
    assert RULES.read_text() == rules_yaml(AlertSettings()), \
        "regenerate: python -m xinfer_sdk.deploy.alerts > deploy/prometheus/xinfer-alerts.yaml"


def test_every_alert_has_a_duration_severity_and_runbook():
    names = set()
    for r in rules():
        names.add(r["alert"])
        assert re.fullmatch(r"\d+m", r["for"]), r["alert"]
        assert r["labels"]["severity"] in ("info", "warning", "critical"), r["alert"]
        assert r["annotations"]["runbook_url"] == f"docs/metrics.md#{anchor(r['alert'])}"
        assert r["annotations"]["summary"] and r["annotations"]["description"]
    assert names >= ASKED_FOR


def test_promtool_check_rules_passes():
    p = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"SUCCESS: {len(rules())} rules found" in p.stdout


def test_promtool_rule_tests_pass():
    p = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=60,
                       cwd=RULE_TESTS.parent)
    assert p.returncode == 0, p.stdout + p.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == {r["alert"] for r in rules()}  # every shipped alert has a case


def test_promtool_rule_tests_catch_a_changed_threshold(tmp_path):
    """The same cases against rules whose SLO is 300 ms: the p99 case (248 ms) must fail."""
    (tmp_path / "xinfer-alerts.yaml").write_text(rules_yaml(AlertSettings(slo_p99_s=0.3)))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    p = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    assert p.returncode != 0
    assert "XinferP99OverSLO" in p.stdout + p.stderr


def test_rules_read_only_metrics_the_server_exports():
    source = (ROOT / "xinfer_sdk" / "server" / "metrics.py").read_text()
    exported = {"xinfer_" + n for n in re.findall(r'\{PREFIX\}_([a-z_]+)"', source)}
    used = set()
    for r in rules():
        used |= set(re.findall(r"\b(xinfer_[a-z_]+)", r["expr"]))
    used = {re.sub(r"_(bucket|total|count|sum)$", "", n) for n in used}
    used.discard("xinfer_request_")  # from the __name__ regex xinfer_request_(success|failure)_total
    assert used and used <= exported, used - exported


def test_runbook_anchors_are_headings_of_docs_metrics():
    docs = (ROOT / "docs" / "metrics.md").read_text()
    headings = {anchor(h) for h in re.findall(r"^#+ (.+)$", docs, re.M)}
    missing = {r["alert"] for r in rules() if anchor(r["alert"]) not in headings}
    assert not missing, f"docs/metrics.md has no heading for {sorted(missing)}"


def test_settings_are_checked():
    with pytest.raises(UserError, match="gpu_memory_ratio"):
        AlertSettings(gpu_memory_ratio=95)
    with pytest.raises(UserError, match="slo_p99_s"):
        AlertSettings(slo_p99_s=0)


def test_selector_scopes_every_xinfer_series():
    """In a cluster each deployment's rules read only its own pods: every selector carries the matchers."""
    groups = rule_groups(AlertSettings(selector='pod=~"mlp-.+"', target='pod=~"mlp-.+"'))
    for r in groups[0]["rules"]:
        expr = r["expr"].replace('"xinfer_request_(success|failure)_total"', '"NAME"')
        selectors = re.findall(r"(?:\bxinfer_[a-z_]+|\bup|rate\((?=\{))(\{[^}]*\})?", expr)
        assert selectors, r["alert"]
        for sel in selectors:
            assert 'pod=~"mlp-.+"' in sel, (r["alert"], expr)
