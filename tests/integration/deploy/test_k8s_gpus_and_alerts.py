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
