"""`xinfer-sdk deploy k8s`: every generated object validates offline against the Kubernetes OpenAPI schemas of
several versions (kubernetes-validate, strict: unknown fields fail) and the Prometheus Operator's CRD models;
the GPU-specific parts are right per profile; the Helm chart renders to exactly the plain manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helm_render import merge, render

from xinfer_sdk.deploy import render as render_deploy
from xinfer_sdk.deploy import resolve_spec
from xinfer_sdk.deploy.values import Values, resolve
from xinfer_sdk.errors import UserError
from xinfer_sdk.profiles import ProfileRegistry

kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (in the [dev] extra)")

# the oldest release still in cloud extended support, a middle one and the newest the package knows
K8S_VERSIONS = ("1.28", "1.33", "1.37")
PROFILES = sorted(ProfileRegistry().names())
IMAGE = "registry.example.com/xinfer:0.1.0"


def spec_for(bundles, profile, **kw):
    bundle = bundles.get(profile) or bundles["cpu" if profile == "cpu" else
                                            "jetson-agx-orin-64gb" if profile.startswith("jetson") else "t4"]
    return resolve_spec(str(bundle), profile=profile, image=IMAGE, **kw)


def key(obj):
    return "HeadlessService" if obj["metadata"]["name"].endswith("-headless") else obj["kind"]


def objects(spec):
    return {key(obj): obj for _, obj in render_deploy(spec).manifests()}


def validate_all(objs, versions=K8S_VERSIONS):
    for obj in objs:
        if obj["apiVersion"].startswith("monitoring.coreos.com"):
            validate_monitor(obj)
            continue
        for version in versions:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as exc:
                pytest.fail(f"{obj['kind']} invalid for Kubernetes {version}: {exc.message} at "
                            f"{'/'.join(map(str, exc.path))}")


def validate_monitor(obj):
    """ServiceMonitor / PodMonitor: parse with the models generated from prometheus-operator's CRDs and
    require a lossless round trip (an unknown or misspelled field would be dropped, and differ)."""
    models = pytest.importorskip("cloudcoil.models.prometheus_operator.v1",
                                 reason="pip install cloudcoil-models-prometheus-operator (in the [dev] extra)")
    cls = getattr(models, obj["kind"])
    parsed = cls.model_validate(obj)
    assert parsed.model_dump(by_alias=True, exclude_none=True, mode="json") == obj


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_validates_against_kubernetes_schemas(bundles, profile):
    spec = spec_for(bundles, profile, monitor="servicemonitor", monitor_labels=["release=kube-prometheus-stack"])
    objs = objects(spec)
    assert set(objs) == {"ConfigMap", "Deployment", "Service", "HeadlessService", "PodDisruptionBudget",
                         "HorizontalPodAutoscaler", "ServiceMonitor", "PrometheusRule"}
    validate_all(list(objs.values()))


def test_all_variants_validate(bundles, plan_json):
    variants = [
        dict(bundle_url="https://storage.example.com/models/mlp.tar.gz", monitor="podmonitor"),
        dict(no := {"autoscale": False, "replicas": 3, "namespace": "ml", "api_key_secret": "xinfer-key"}),
        dict(bundle_pvc="models", bundle_subpath="mlp/v3", runtime_class="nvidia", node_selector=["pool=gpu"]),
        dict(bundle_url_secret="mlp-url", gpu_label="none", monitor="servicemonitor"),
        dict(from_plan=str(plan_json), cpu=4, memory="3Gi"),
    ]
    assert no
    for kw in variants:
        for profile in ("cpu", "t4", "jetson-agx-orin-64gb"):
            if kw.get("from_plan") and profile.startswith("jetson"):
                continue
            validate_all(list(objects(spec_for(bundles, profile, **kw)).values()))


def test_a_broken_object_fails_validation():
    """The validator is strict enough to catch what a hand edit gets wrong (so the tests above can fail)."""
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "s", "image": "i", "resourcez": {}}]}}}}
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, "1.33", strict=True)
    with pytest.raises(AssertionError):
        validate_monitor({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"},
                          "spec": {"selector": {}, "endpoints": [{"port": "metrics", "intervall": "15s"}]}})


def _pod(objs):
    return objs["Deployment"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("profile", PROFILES)
def test_gpu_parts_follow_the_profile(bundles, profile):
    from xinfer_sdk.profiles import load_profile

    prof = load_profile(profile)
    objs = objects(spec_for(bundles, profile))
    pod = _pod(objs)
    res = pod["containers"][0]["resources"]
    text = json.dumps(objs)
    cfg = yaml.safe_load(objs["ConfigMap"]["data"]["config.yaml"])["models"][0]
    if prof.kind == "cpu":
        assert "nvidia.com" not in text  # no GPU request, label or toleration anywhere
        assert "tolerations" not in pod or pod["tolerations"] == []
        workers = (cfg.get("batch") or {}).get("device_concurrency") or prof.batch.device_concurrency
        assert cfg["device"] == "cpu" and cfg["threads"] * workers <= float(res["requests"]["cpu"])
        return
    gpu = prof.kubernetes.gpu_resource
    assert gpu == ("amd.com/gpu" if prof.vendor == "amd" else "nvidia.com/gpu")
    assert res["limits"][gpu] == "1" and res["requests"][gpu] == "1"
    assert {"key": gpu, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert cfg["device"] == ("rocm" if prof.vendor == "amd" else "cuda") and "threads" not in cfg
    selector = pod["nodeSelector"]
    if prof.vendor == "amd":  # the ROCm node labeller's label; nothing NVIDIA anywhere
        assert "nvidia.com" not in text
        assert selector["amd.com/gpu.product-name"] == prof.match.k8s_gpu_product[0]
        assert " " not in selector["amd.com/gpu.product-name"]  # sysfs product_name with spaces as '_'
    elif prof.kind == "gpu":
        assert selector["nvidia.com/gpu.product"] == prof.match.k8s_gpu_product[0]
        assert selector["nvidia.com/gpu.product"].replace("-", " ") in \
            [n.replace("-", " ") for n in prof.match.nvml_names]  # GFD: the NVML name, spaces as '-'
    else:  # Jetson: GFD's product/family labels do not tell modules (or Thor) apart: compute capability on arm64
        assert "nvidia.com/gpu.product" not in selector and "nvidia.com/gpu.family" not in selector
        major, minor = prof.compute_capability.split(".")
        assert (selector["nvidia.com/gpu.compute.major"], selector["nvidia.com/gpu.compute.minor"]) == (major, minor)
        assert selector["kubernetes.io/arch"] == "arm64"


def test_deployment_contract(bundles):
    spec = spec_for(bundles, "t4", drain_timeout="40s", prestop_delay="15s")
    objs = objects(spec)
    pod = _pod(objs)
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["readinessProbe"]["httpGet"]["port"] == "metrics"  # health-only port, open through the drain
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "15"]
    assert c["args"][c["args"].index("--drain-timeout") + 1] == "40"
    assert pod["terminationGracePeriodSeconds"] > 15 + 40  # preStop + the server's drain, then SIGKILL
    assert "runtimeClassName" not in pod
    startup = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
    assert objs["Deployment"]["spec"]["progressDeadlineSeconds"] > startup  # a slow first start is not "failed"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    bundle_mount = next(m for m in c["volumeMounts"] if m["name"] == "bundle")
    assert bundle_mount["readOnly"] is True
    vol = next(v for v in pod["volumes"] if v["name"] == "bundle")
    assert vol["persistentVolumeClaim"] == {"claimName": "mlp-bundle", "readOnly": True}
    writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp", "/var/cache/xinfer"}  # everything else is read-only
    assert "replicas" not in objs["Deployment"]["spec"]  # the HPA owns it
    ports = {p["name"]: p["port"] for p in objs["Service"]["spec"]["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert objs["PodDisruptionBudget"]["spec"] == {"maxUnavailable": 1,
                                                   "selector": objs["Deployment"]["spec"]["selector"]}


def test_init_container_fetches_the_bundle_into_a_read_only_mount(bundles):
    from xinfer_sdk.bundle import MANIFEST_NAME, sha256_file

    objs = objects(spec_for(bundles, "cpu", bundle_url="https://s3.example.com/b/mlp.tar.gz?X-Amz-Signature=abc"))
    pod = _pod(objs)
    init = pod["initContainers"][0]
    pin = sha256_file(bundles["cpu"] / MANIFEST_NAME)
    assert init["args"] == ["fetch", "--url", "https://s3.example.com/b/mlp.tar.gz?X-Amz-Signature=abc",
                            "--sha256", pin, "/models/mlp"]
    assert next(m for m in init["volumeMounts"] if m["name"] == "bundle").get("readOnly") is not True
    assert next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "bundle")["readOnly"] is True
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == "bundle")
    # a presigned URL is a credential: with --bundle-url-secret it never appears in the pod spec
    objs = objects(spec_for(bundles, "cpu", bundle_url_secret="mlp-bundle-url"))
    init = _pod(objs)["initContainers"][0]
    assert init["args"][:3] == ["fetch", "--url-env", "XINFER_BUNDLE_URL"]
    assert {"name": "XINFER_BUNDLE_URL", "valueFrom": {"secretKeyRef": {"name": "mlp-bundle-url", "key": "url"}}} \
        in init["env"]


def test_gpu_label_choices(bundles):
    gke = _pod(objects(spec_for(bundles, "l4", gpu_label="gke")))["nodeSelector"]
    assert gke["cloud.google.com/gke-accelerator"] == "nvidia-l4" and "nvidia.com/gpu.product" not in gke
    spec = spec_for(bundles, "t4", gpu_label="none")
    sel = _pod(objects(spec))["nodeSelector"]
    assert not any(k.startswith(("nvidia.com", "cloud.google.com")) for k in sel)
    assert any("any node with a free nvidia.com/gpu" in n for n in spec.notes)
    with pytest.raises(UserError, match="GKE offers no accelerator known for profile 'a10g'"):
        spec_for(bundles, "a10g", gpu_label="gke")

def test_hpa_scales_on_queue_depth_with_cpu_fallback(bundles):
    objs = objects(spec_for(bundles, "l4", min_replicas=2, max_replicas=8, target_queue_depth=4))
    hpa = objs["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    pods, cpu = hpa["spec"]["metrics"]
    assert pods["pods"]["metric"]["name"] == "xinfer_queue_depth"
    assert pods["pods"]["metric"]["selector"] == {"matchLabels": {"model": "mlp"}}
    assert pods["pods"]["target"] == {"type": "AverageValue", "averageValue": "4"}
    assert cpu["resource"]["name"] == "cpu" and cpu["resource"]["target"]["type"] == "Utilization"


def test_from_plan_takes_replicas_and_batch_policy(bundles, plan_json):
    plan = {p["profile"]: p["recommendation"] for p in json.loads(Path(plan_json).read_text())["profiles"]}
    spec = spec_for(bundles, "cpu", from_plan=str(plan_json))
    objs = objects(spec)
    rec = plan["cpu"]
    assert rec["replicas"] > 1  # the plan's rate needs several replicas
    assert objs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == rec["replicas"]
    model = yaml.safe_load(objs["ConfigMap"]["data"]["config.yaml"])["models"][0]
    batch = model["batch"]
    assert model["threads"] == max(1, int(spec.cpu // batch["device_concurrency"]))  # cores split over workers
    assert batch["max_batch_size"] == rec["policy"]["max_batch_size"]
    assert batch["device_concurrency"] == rec["policy"]["device_concurrency"]
    fixed = objects(spec_for(bundles, "cpu", from_plan=str(plan_json), autoscale=False))
    assert fixed["Deployment"]["spec"]["replicas"] == rec["replicas"] and "HorizontalPodAutoscaler" not in fixed


@pytest.mark.parametrize("kw,match", [
    (dict(from_plan="PLAN", profile="a100-sxm4-80gb"), "no entry for profile 'a100-sxm4-80gb' .it has: cpu, t4"),
    (dict(from_plan="/nonexistent/plan.json"), "no such file"),
    (dict(name="My_Model"), "not a valid Kubernetes name"),
    (dict(bundle_pvc="x", bundle_url="https://h/b.tar.gz"), "exclusive"),
    (dict(bundle_url_secret="s", bundle_url="https://h/b.tar.gz"), "exclusive"),
    (dict(bundle_url="s3://bucket/b.tar.gz"), "expected an http"),
    (dict(min_replicas=4, max_replicas=2), "below --min-replicas"),
    (dict(image=""), "--image is required"),
    (dict(memory="lots"), "expected a size"),
    (dict(node_selector=["novalue"]), "KEY=VALUE"),
])
def test_user_errors_name_the_problem(bundles, plan_json, kw, match):
    kw = dict(kw)
    if kw.get("from_plan") == "PLAN":
        kw["from_plan"] = str(plan_json)
    profile = kw.pop("profile", "cpu")
    image = kw.pop("image", IMAGE)
    with pytest.raises(UserError, match=match):
        resolve_spec(str(bundles["cpu"]), profile=profile, image=image, **kw)


# -- the Helm chart ------------------------------------------------------------------------------------------
def chart_objects(rendered, overrides=None):
    values = merge(rendered.values.tree, overrides or {})
    out = {}
    for rel, text in rendered.chart_files().items():
        if rel.startswith("templates/") and rel.endswith(".yaml"):
            doc = yaml.safe_load(render(text, values))
            if doc:
                out[key(doc)] = doc
    return out, values


def _without_hash(obj):
    obj["spec"]["template"]["metadata"]["annotations"].pop("xinfer.dev/config-sha256")
    return obj


@pytest.mark.parametrize("profile,kw", [("t4", dict(monitor="servicemonitor", bundle_subpath="m/v1")),
                                        ("l4", dict(bundle_url_secret="u", gpu_label="gke")),
                                        ("cpu", dict(bundle_url="https://h/m.tar.gz", api_key_secret="k")),
                                        ("jetson-agx-orin-64gb", dict(runtime_class="nvidia", monitor="podmonitor"))])
def test_chart_with_its_values_renders_the_plain_manifests(bundles, profile, kw):
    rendered = render_deploy(spec_for(bundles, profile, **kw))
    plain = {key(obj): obj for _, obj in rendered.manifests()}
    chart, _ = chart_objects(rendered)
    assert set(chart) == set(plain)
    for kind in plain:
        a, b = chart[kind], plain[kind]
        if kind == "Deployment":
            a, b = _without_hash(a), _without_hash(b)
        if kind == "ConfigMap":
            assert yaml.safe_load(a["data"].pop("config.yaml")) == yaml.safe_load(b["data"].pop("config.yaml"))
        assert a == b, kind


def test_chart_values_overrides_render_valid_objects(bundles):
    rendered = render_deploy(spec_for(bundles, "t4"))
    over = {"autoscaling": {"enabled": False}, "replicas": 5, "image": "registry.example.com/xinfer:0.2",
            "podMonitor": {"enabled": True}, "resources": {"requests": {"cpu": "8", "memory": "16Gi",
                                                                         "nvidia.com/gpu": "1"},
                                                            "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"}}}
    over.update({"drainTimeoutSeconds": 120, "runtimeClassName": "nvidia"})
    chart, values = chart_objects(rendered, over)
    assert "HorizontalPodAutoscaler" not in chart and "PodMonitor" in chart
    pod = chart["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 10 + 120 + 5  # follows the drain: never SIGKILL mid-drain
    assert pod["runtimeClassName"] == "nvidia"  # a knob even when the generator was not given one
    dep = chart["Deployment"]
    assert dep["spec"]["replicas"] == 5
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/xinfer:0.2"
    validate_all(list(chart.values()))
    v = Values()
    v.tree = values
    # the plain resolver reads the same values: same objects
    plain = {key(obj): obj for obj in (resolve(o, v) for _, o, flag in rendered.docs if flag is None or v.holds(flag))}
    assert _without_hash(plain["Deployment"]) == _without_hash(dep)


def test_values_yaml_matches_its_schema(bundles):
    import jsonschema

    rendered = render_deploy(spec_for(bundles, "a10g", monitor="servicemonitor"))
    files = rendered.chart_files()
    schema = json.loads(files["values.schema.json"])
    values = yaml.safe_load(files["values.yaml"])
    jsonschema.validate(values, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(merge(values, {"replicas": "three"}), schema)
    # what `helm --set` produces for the usual knobs passes (numbers where the generator wrote strings)
    jsonschema.validate(merge(values, {"autoscaling": {"targetQueueDepth": 4, "enabled": False},
                                       "resources": {"requests": {"cpu": 4}}, "lifecycle": {"preStopSleepSeconds": 20}}),
                        schema)
    chart = yaml.safe_load(files["Chart.yaml"])
    assert chart["apiVersion"] == "v2" and chart["name"] == "mlp" and chart["type"] == "application"
