"""`xinfer-sdk deploy k8s` as a user types it: files on disk that kubectl / helm take, one-line errors, exit 2."""

from __future__ import annotations

import json

import pytest
import yaml

IMAGE = "registry.example.com/xinfer:0.1.0"


def test_deploy_writes_manifests_chart_adapter_rule_and_readme(bundles, plan_json, tmp_path, cli_run):
    out = tmp_path / "deploy-mlp"
    code, stdout, err = cli_run("deploy", "k8s", str(bundles["t4"]), "--profile", "t4", "--image", IMAGE,
                                "--from-plan", str(plan_json), "--max-replicas", "12", "--monitor", "servicemonitor",
                                "--monitor-label", "release=kube-prometheus-stack", "-o", str(out))
    assert code == 0, err
    assert "kubectl apply -f" in stdout
    manifests = sorted(p.name for p in (out / "manifests").iterdir())
    assert manifests == ["00-configmap.yaml", "01-deployment.yaml", "02-service.yaml", "03-service-headless.yaml",
                         "04-poddisruptionbudget.yaml", "05-hpa.yaml", "06-servicemonitor.yaml",
                         "07-prometheusrule.yaml"]
    hpa = yaml.safe_load((out / "manifests" / "05-hpa.yaml").read_text())
    assert hpa["spec"]["maxReplicas"] == 12
    sm = yaml.safe_load((out / "manifests" / "06-servicemonitor.yaml").read_text())
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    chart = out / "chart" / "mlp"
    assert {p.name for p in (chart / "templates").iterdir()} >= {"deployment.yaml", "hpa.yaml", "podmonitor.yaml"}
    assert yaml.safe_load((chart / "values.yaml").read_text())["autoscaling"]["maxReplicas"] == 12
    rules = yaml.safe_load((out / "prometheus-adapter" / "values.yaml").read_text())["rules"]["custom"]
    assert rules[0]["name"]["as"] == hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert "Dockerfile.cuda" in (out / "README.md").read_text()
    # the alert rules: a PrometheusRule the same Prometheus selects, and the plain file; p99 = the plan's 20 ms
    pr = yaml.safe_load((out / "manifests" / "07-prometheusrule.yaml").read_text())
    assert pr["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    plain = yaml.safe_load((out / "prometheus" / "xinfer-alerts.yaml").read_text())
    assert plain["groups"] == pr["spec"]["groups"]
    p99 = next(r for r in plain["groups"][0]["rules"] if r["alert"] == "XinferP99OverSLO")
    assert p99["expr"].endswith("> 0.02") and 'pod=~"mlp-[a-z0-9]+-[a-z0-9]+"' in p99["expr"]


def test_deploy_json_and_rerun_into_the_same_folder(bundles, tmp_path, cli_run):
    out = tmp_path / "o"
    for _ in range(2):  # a second run refreshes its own output
        code, stdout, err = cli_run("deploy", "k8s", str(bundles["cpu"]), "-p", "cpu", "--image", IMAGE,
                                    "-o", str(out), "--json")
        assert code == 0, err
    doc = json.loads(stdout)
    assert doc["profile"] == "cpu" and "manifests/01-deployment.yaml" in doc["manifests"]


@pytest.mark.parametrize("args,match", [
    (["-p", "t4"], "Missing option '--image'"),
    (["-p", "nosuch", "--image", IMAGE], "unknown profile 'nosuch'"),
    (["-p", "t4", "--image", IMAGE, "--name", "Bad_Name"], "not a valid Kubernetes name"),
    (["-p", "t4", "--image", IMAGE, "--from-plan", "/nope.json"], "no such file"),
    (["-p", "t4", "--image", IMAGE, "--drain-timeout", "soon"], "--drain-timeout"),
    (["-p", "t4", "--image", IMAGE, "--gpus-per-pod", "0"], "--gpus-per-pod must be at least 1"),
    (["-p", "cpu", "--image", IMAGE, "--gpus-per-pod", "2"], "profile 'cpu' has no GPU"),
    (["-p", "t4", "--image", IMAGE, "--slo-p99", "fast"], "--slo-p99"),
])
def test_user_errors_are_one_line_exit_2(bundles, tmp_path, cli_run, args, match):
    code, _, err = cli_run("deploy", "k8s", str(bundles["t4"]), *args, "-o", str(tmp_path / "o"))
    assert code == 2, err
    assert match in err and "Traceback" not in err


def test_refuses_to_write_into_an_unrelated_folder(bundles, tmp_path, cli_run):
    (tmp_path / "keep.txt").write_text("mine")
    code, _, err = cli_run("deploy", "k8s", str(bundles["cpu"]), "-p", "cpu", "--image", IMAGE, "-o", str(tmp_path))
    assert code == 2 and "not empty" in err
    assert (tmp_path / "keep.txt").read_text() == "mine"
