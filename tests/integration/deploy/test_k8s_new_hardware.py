"""`deploy k8s` for the accelerators beyond NVIDIA data-center GPUs: AMD Instinct (amd.com/gpu and the ROCm node
labeller's product label) and Jetson Thor (GFD's family label reads 'undefined' on compute capability 11, so pods
key on the compute capability). Every object validates against the Kubernetes schemas the other tests use, from
the library and from the command line, and the Helm chart renders to the same objects."""

from __future__ import annotations

import json

import pytest
import yaml
from test_k8s_manifests import IMAGE, chart_objects, key, objects, spec_for, validate_all

from xinfer_sdk.deploy import render as render_deploy
from xinfer_sdk.errors import UserError

AMD = ("mi300x", "mi325x", "mi355x")
THOR = ("jetson-agx-thor", "jetson-t4000")


def _pod(objs):
    return objs["Deployment"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("profile", AMD)
def test_amd_requests_amd_gpu_on_the_labelled_instinct_nodes(bundles, profile):
    spec = spec_for(bundles, profile, monitor="servicemonitor", monitor_labels=["release=kube-prometheus-stack"])
    objs = objects(spec)
    validate_all(list(objs.values()))
    pod = _pod(objs)
    res = pod["containers"][0]["resources"]
    assert res["requests"]["amd.com/gpu"] == res["limits"]["amd.com/gpu"] == "1"
    assert pod["tolerations"] == [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    sel = pod["nodeSelector"]
    assert sel["amd.com/gpu.product-name"].startswith("AMD_Instinct_MI3")
    assert sel["kubernetes.io/arch"] == "amd64"
    assert "nvidia.com" not in json.dumps(objs)
    assert spec.image_variant == "rocm"
    assert any("MIGraphX" in n for n in spec.notes)
    # the server asks for the AMD GPU by name, so it starts the migraphx backend or refuses (never the CPU)
    assert yaml.safe_load(objs["ConfigMap"]["data"]["config.yaml"])["models"][0]["device"] == "rocm"


def test_mi300x_selects_amds_documented_product_name(bundles):
    spec = spec_for(bundles, "mi300x")
    assert _pod(objects(spec))["nodeSelector"]["amd.com/gpu.product-name"] == "AMD_Instinct_MI300X_OAM"
    assert not any("expected, not confirmed" in n for n in spec.notes)
    # MI325X / MI355X boards have been seen with both forms: the generator says which it chose and how to check
    spec = spec_for(bundles, "mi325x")
    assert _pod(objects(spec))["nodeSelector"]["amd.com/gpu.product-name"] == "AMD_Instinct_MI325_OAM"
    assert any("kubectl get nodes -L amd.com/gpu.product-name" in n for n in spec.notes)


def test_amd_label_choices(bundles):
    sel = _pod(objects(spec_for(bundles, "mi300x", gpu_label="none")))["nodeSelector"]
    assert not any(k.startswith("amd.com") for k in sel)
    sel = _pod(objects(spec_for(bundles, "mi300x", node_selector=["amd.com/gpu.product-name=AMD_Instinct_MI300X"])))[
        "nodeSelector"]
    assert sel["amd.com/gpu.product-name"] == "AMD_Instinct_MI300X"  # --node-selector overrides the profile's
    with pytest.raises(UserError, match="GKE offers no accelerator known for profile 'mi300x'"):
        spec_for(bundles, "mi300x", gpu_label="gke")


@pytest.mark.parametrize("profile", THOR)
def test_thor_keys_on_compute_capability_not_the_family_label(bundles, profile):
    spec = spec_for(bundles, profile, bundle_url="https://storage.example.com/m.tar.gz", monitor="podmonitor")
    objs = objects(spec)
    validate_all(list(objs.values()))
    pod = _pod(objs)
    sel = pod["nodeSelector"]
    assert (sel["nvidia.com/gpu.compute.major"], sel["nvidia.com/gpu.compute.minor"]) == ("11", "0")
    assert sel["kubernetes.io/arch"] == "arm64"
    assert not {"nvidia.com/gpu.family", "nvidia.com/gpu.product"} & set(sel)
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert spec.image_variant == "jetpack7"  # JetPack 6's image cannot run on Thor
    assert any("Dockerfile.jetpack7" in n for n in spec.notes)


def test_orin_keeps_the_jetpack6_image_and_selects_its_own_compute_capability(bundles):
    spec = spec_for(bundles, "jetson-agx-orin-64gb")
    sel = _pod(objects(spec))["nodeSelector"]
    assert (sel["nvidia.com/gpu.compute.major"], sel["nvidia.com/gpu.compute.minor"]) == ("8", "7")
    assert spec.image_variant == "jetson"
    sel = _pod(objects(spec_for(bundles, "jetson-agx-thor", gpu_label="none")))["nodeSelector"]
    assert not any(k.startswith("nvidia.com") for k in sel) and sel["kubernetes.io/arch"] == "arm64"


@pytest.mark.parametrize("profile", ["gb200", "gb10"])
def test_grace_hosts_are_arm64_with_the_gfd_product_label(bundles, profile):
    spec = spec_for(bundles, profile)
    sel = _pod(objects(spec))["nodeSelector"]
    assert sel["kubernetes.io/arch"] == "arm64"
    assert sel["nvidia.com/gpu.product"] == {"gb200": "NVIDIA-GB200", "gb10": "NVIDIA-GB10"}[profile]
    assert spec.image_variant == "cuda" and any("linux/arm64" in n for n in spec.notes)


@pytest.mark.parametrize("profile,kw", [("mi300x", dict(monitor="servicemonitor")),
                                        ("jetson-agx-thor", dict(runtime_class="nvidia"))])
def test_chart_renders_the_plain_manifests(bundles, profile, kw):
    rendered = render_deploy(spec_for(bundles, profile, **kw))
    plain = {key(obj): obj for _, obj in rendered.manifests()}
    chart, _ = chart_objects(rendered)
    assert set(chart) == set(plain)
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
        a, b = chart[kind], plain[kind]
        if kind == "Deployment":
            for obj in (a, b):
                obj["spec"]["template"]["metadata"]["annotations"].pop("xinfer.dev/config-sha256")
        assert a == b, kind


def test_cli_writes_valid_amd_manifests(bundles, tmp_path, cli_run):
    """The issue's own command: `xinfer-sdk deploy k8s BUNDLE --profile mi300x` validates against the schemas."""
    out = tmp_path / "mi300x"
    code, stdout, err = cli_run("deploy", "k8s", str(bundles["t4"]), "--profile", "mi300x", "--image", IMAGE,
                                "-o", str(out))
    assert code == 0, err
    objs = [yaml.safe_load(p.read_text()) for p in sorted((out / "manifests").glob("*.yaml"))]
    validate_all(objs)
    dep = next(o for o in objs if o["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["amd.com/gpu"] == "1"
    assert pod["nodeSelector"]["amd.com/gpu.product-name"] == "AMD_Instinct_MI300X_OAM"
    readme = (out / "README.md").read_text()
    assert "Dockerfile.rocm" in readme and "amd.com/gpu" in readme


@pytest.mark.parametrize("profile", ["mi300x", "jetson-agx-thor"])
def test_chart_values_match_their_schema(bundles, profile):
    import jsonschema

    files = render_deploy(spec_for(bundles, profile)).chart_files()
    values = yaml.safe_load(files["values.yaml"])
    jsonschema.validate(values, json.loads(files["values.schema.json"]))
    gpu = "amd.com/gpu" if profile == "mi300x" else "nvidia.com/gpu"
    assert values["resources"]["limits"][gpu] == "1"


def test_unified_memory_gpu_counts_the_plans_activations_in_host_memory(bundles, tmp_path):
    """GB10 (DGX Spark) is a GPU profile whose memory is the host's: the plan's activations raise the pod's
    memory request as on a Jetson; a discrete GPU (GB200) keeps them in HBM."""
    act = 64 << 20  # bytes per sample
    policy = {"max_batch_size": 8, "preferred_batch_sizes": [8], "max_batch_delay": "1ms", "device_concurrency": 2,
              "max_queue_size": 64}
    entry = {"recommendation": {"feasible": True, "replicas": 1, "policy": policy},
             "memory": {"activation_per_sample": act}}
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"model": "mlp", "profiles": [{"profile": n, **entry} for n in ("gb10", "gb200")]}))
    unified = spec_for(bundles, "gb10", from_plan=str(plan))
    discrete = spec_for(bundles, "gb200", from_plan=str(plan))
    from xinfer_sdk.profiles import load_profile

    floor = {n: load_profile(n).kubernetes.memory_gb * (1 << 30) for n in ("gb10", "gb200")}
    assert discrete.memory_bytes - floor["gb200"] <= 256 << 20    # weights only, rounded up to 256 MiB
    assert unified.memory_bytes - floor["gb10"] >= act * 8 * 2   # + batch 8 x 2 workers of activations
