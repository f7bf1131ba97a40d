"""`deploy k8s --gpus-per-pod N`: the pod requests N GPUs and the server runs on all of them; the alert rules in
the output (PrometheusRule with the Operator, a plain rules file always) are scoped to the deployment's pods and
pass `promtool check rules`."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from helm_render import render

from xinfer_sdk.deploy import render as render_deploy
from xinfer_sdk.deploy import resolve_spec, write
from xinfer_sdk.errors import UserError

IMAGE = "registry.example.com/xinfer:0.1.0"


def objects(spec):
    return {obj["kind"] + ("-headless" if obj["metadata"]["name"].endswith("-headless") else ""): obj
            for _, obj in render_deploy(spec).manifests()}


def server(objs):
    return objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def config(objs):
    return yaml.safe_load(objs["ConfigMap"]["data"]["config.yaml"])["models"][0]


@pytest.mark.parametrize("profile,n,resource", [("t4", 4, "nvidia.com/gpu"), ("mi300x", 8, "amd.com/gpu")])
def test_gpus_per_pod_requests_n_gpus_and_serves_on_all(bundles, profile, n, resource):
    objs = objects(resolve_spec(str(bundles["t4"]), profile=profile, image=IMAGE, gpus_per_pod=n))
    res = server(objs)["resources"]
    assert res["requests"][resource] == str(n) and res["limits"][resource] == str(n)
    assert config(objs)["device"] == "all"


def test_one_gpu_per_pod_is_the_default_and_unchanged(bundles):
    objs = objects(resolve_spec(str(bundles["t4"]), profile="t4", image=IMAGE))
    assert server(objs)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert config(objs)["device"] == "cuda"


def test_gpus_per_pod_chart_renders_the_same_and_validates(bundles):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (in the [dev] extra)")
    rendered = render_deploy(resolve_spec(str(bundles["t4"]), profile="t4", image=IMAGE, gpus_per_pod=2))
    values = rendered.values.tree
    assert values["resources"]["requests"]["nvidia.com/gpu"] == "2"
    chart = yaml.safe_load(render(rendered.chart_files()["templates/deployment.yaml"], values))
    plain = dict(rendered.manifests())["01-deployment.yaml"]
    assert chart["spec"]["template"]["spec"]["containers"][0]["resources"] == \
        plain["spec"]["template"]["spec"]["containers"][0]["resources"]
    kv.validate(plain, "1.33", strict=True)


@pytest.mark.parametrize("profile,match", [("jetson-agx-orin-64gb", "one integrated GPU"),
                                           ("gb10", "sharing the host's memory"), ("cpu", "has no GPU")])
def test_gpus_per_pod_refused_where_a_node_has_one_gpu(bundles, profile, match):
    bundle = bundles["cpu" if profile == "cpu" else "jetson-agx-orin-64gb" if profile.startswith("jetson") else "t4"]
    with pytest.raises(UserError, match=match):
        resolve_spec(str(bundle), profile=profile, image=IMAGE, gpus_per_pod=2)


def test_prometheus_rule_only_with_the_operator(bundles):
    without = objects(resolve_spec(str(bundles["t4"]), profile="t4", image=IMAGE))
    assert "PrometheusRule" not in without
    spec = resolve_spec(str(bundles["t4"]), profile="t4", image=IMAGE, monitor="podmonitor", namespace="ml",
                        monitor_labels=["release=prom"], slo_p99="40ms")
    rule = objects(spec)["PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "prom" and rule["metadata"]["namespace"] == "ml"
    by_name = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert by_name["XinferP99OverSLO"]["expr"].endswith("> 0.04")
    assert 'namespace="ml",pod=~"mlp-[a-z0-9]+-[a-z0-9]+"' in by_name["XinferTargetDown"]["expr"]
    assert by_name["XinferReplicasUnavailable"]["expr"] == \
        'kube_deployment_status_replicas_unavailable{deployment="mlp",namespace="ml"} > 0'
    assert all(r["labels"]["deployment"] == "mlp" for r in by_name.values())


def test_written_rules_file_passes_promtool(bundles, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package 'prometheus'; bash .ci/install-system-deps.sh)")
    write(resolve_spec(str(bundles["t4"]), profile="t4", image=IMAGE, namespace="ml"), tmp_path / "out")
    p = subprocess.run([promtool, "check", "rules", str(tmp_path / "out" / "prometheus" / "xinfer-alerts.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS: 11 rules found" in p.stdout


SCOPED_CASES = """
rule_files: [xinfer-alerts.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'xinfer_server_ready{namespace="ml",pod="mlp-5d4f8b7c9-x2x4q",instance="10.0.0.1:8002"}'
        values: '0x10'
      - series: 'xinfer_server_ready{namespace="ml",pod="mlp-v2-5d4f8b7c9-x2x4q",instance="10.0.0.2:8002"}'
        values: '0x10'
      - series: 'xinfer_server_ready{namespace="other",pod="mlp-5d4f8b7c9-x2x4q",instance="10.0.0.3:8002"}'
        values: '0x10'
      - series: 'up{namespace="ml",pod="mlp-5d4f8b7c9-abcde",instance="10.0.0.4:8002",job="mlp"}'
        values: '0x10'
      - series: 'up{namespace="ml",pod="mlp-v2-5d4f8b7c9-abcde",instance="10.0.0.5:8002",job="mlp-v2"}'
        values: '0x10'
    alert_rule_test:
      - eval_time: 8m
        alertname: XinferReplicaNotReady
        exp_alerts:
          - exp_labels: {severity: warning, deployment: mlp, namespace: ml, pod: mlp-5d4f8b7c9-x2x4q,
                         instance: "10.0.0.1:8002"}
            exp_annotations:
              summary: 'Server 10.0.0.1:8002 not ready'
              description: 'The server on 10.0.0.1:8002 reports not ready (/v2/health/ready) for 5 minutes: a model is not loaded, every worker of a model is lost, or it is draining.'
              runbook_url: https://wiki.example.com/xinfer/metrics#xinferreplicanotready
      - eval_time: 8m
        alertname: XinferTargetDown
        exp_alerts:
          - exp_labels: {severity: critical, deployment: mlp, namespace: ml, pod: mlp-5d4f8b7c9-abcde,
                         instance: "10.0.0.4:8002", job: mlp}
            exp_annotations:
              summary: 'Metrics endpoint 10.0.0.4:8002 down'
              description: 'Prometheus cannot scrape 10.0.0.4:8002 (job mlp): the server is down or unreachable.'
              runbook_url: https://wiki.example.com/xinfer/metrics#xinfertargetdown
"""


def test_deployment_rules_alert_on_its_own_pods_only(bundles, tmp_path):
    """Scoped to namespace ml and the Deployment 'mlp' pods: not 'mlp-v2' pods, not another namespace."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package 'prometheus'; bash .ci/install-system-deps.sh)")
    write(resolve_spec(str(bundles["t4"]), profile="t4", image=IMAGE, namespace="ml",
                       runbook_base="https://wiki.example.com/xinfer/metrics"), tmp_path / "out")
    (tmp_path / "out" / "prometheus" / "cases.yaml").write_text(SCOPED_CASES)
    p = subprocess.run([promtool, "test", "rules", "cases.yaml"], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path / "out" / "prometheus")
    assert p.returncode == 0, p.stdout + p.stderr


def test_multi_gpu_config_is_one_the_server_reads(bundles, tmp_path):
    """The ConfigMap's config.yaml with device 'all' passes the server's own config reader."""
    from xinfer_sdk.server.config import read_serve_config

    objs = objects(resolve_spec(str(bundles["t4"]), profile="t4", image=IMAGE, gpus_per_pod=2))
    path = tmp_path / "config.yaml"
    path.write_text(objs["ConfigMap"]["data"]["config.yaml"])
    cfg = read_serve_config(str(path))
    assert [m.device for m in cfg.models] == ["all"]
