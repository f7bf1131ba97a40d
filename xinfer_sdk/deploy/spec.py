"""What `xinfer-sdk deploy k8s` deploys: the bundle, the profile and the plan turned into concrete settings.

Everything the manifests need is decided here, once, with the reason kept where it is not obvious
(``DeploySpec.notes``). ``manifests.py`` only arranges these values into Kubernetes objects.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..bundle import MANIFEST_NAME, open_bundle, sha256_file
from ..errors import UserError
from ..policy import BatchPolicy, parse_duration
from ..profiles import Profile, load_profile
from .alerts import RUNBOOK_BASE, AlertSettings
from .nodes import accelerator_notes, gpu_selector, image_variant

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
RUN_AS = 10001                        # the image's non-root user (deploy/docker/Dockerfile.*)
MODELS_DIR = "/models"                # the bundle is mounted read-only at /models/<name>
CONFIG_DIR = "/etc/xinfer"            # config.yaml (+ user profiles) from the ConfigMap
CACHE_DIR = "/var/cache/xinfer"       # writable emptyDir: TensorRT engines built on the node
QUEUE_METRIC = "xinfer_queue_depth"   # per model, exported by the server's /metrics
MONITORS = ("servicemonitor", "podmonitor")
GRPC_MAX_CONNECTION_AGE = "2m"        # gRPC clients re-resolve at least this often: new replicas get traffic
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_GIB = 1 << 30
DEFAULT_SLO_P99_S = 0.1               # alert threshold without --slo-p99 or a plan


@dataclasses.dataclass
class DeploySpec:
    name: str
    namespace: str | None
    profile: Profile
    bundle_name: str                  # the model's name as served (KServe /v2/models/<name>)
    precision: str
    image: str
    image_pull_policy: str
    replicas: int
    autoscale: bool
    min_replicas: int
    max_replicas: int
    target_queue_depth: float
    target_cpu_utilization: int
    policy: dict[str, Any] | None     # batch policy from the plan (None: the bundle's own)
    threads: int | None               # CPU engine threads (cpu profile: the CPU request)
    cpu: float
    memory_bytes: int
    bundle_bytes: int
    bundle_pvc: str | None
    bundle_subpath: str | None
    bundle_url: str | None
    bundle_url_secret: str | None       # Secret holding the URL (key 'url'): a presigned URL is a credential
    manifest_sha256: str                # of the bundle's xinfer.yaml: pins what the init container may accept
    drain_timeout_s: int
    prestop_s: int
    monitor: str | None
    monitor_labels: dict[str, str]
    scrape_interval: str
    node_selector: dict[str, str]
    tolerations: list[dict[str, str]]
    runtime_class: str | None
    api_key_secret: str | None
    user_profiles: dict[str, str]     # file name -> YAML text, for profiles the image does not ship
    source_plan: str | None = None
    gpus_per_pod: int = 1             # GPUs each pod requests; above 1 the server runs on every one (device all)
    slo_p99_s: float = DEFAULT_SLO_P99_S  # the alert rules' p99 threshold (the plan's SLO with --from-plan)
    runbook_base: str = RUNBOOK_BASE
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.profile.kind

    @property
    def gpu(self) -> bool:
        return bool(self.profile.kubernetes.gpu_resource)

    @property
    def alert_settings(self) -> AlertSettings:
        """The alert rules of this deployment: scoped to its pods (namespace + the Deployment's pod names), the
        queue threshold twice the autoscaler's per-pod target (the HPA is not keeping up)."""
        pods = f'pod=~"{self.name}-[a-z0-9]+-[a-z0-9]+"'
        sel = f'namespace="{self.namespace}",{pods}' if self.namespace else pods
        return AlertSettings(slo_p99_s=self.slo_p99_s, queue_depth=2 * self.target_queue_depth, selector=sel,
                             target=sel, deployment=self.name, namespace=self.namespace,
                             runbook_base=self.runbook_base)

    @property
    def device(self) -> str:
        """The server's device in config.yaml: explicit, so a GPU pod whose GPU does not work fails instead of
        running on the CPU; with several GPUs per pod, every GPU the pod was given."""
        if self.kind == "cpu":
            return "cpu"
        if self.gpus_per_pod > 1:
            return "all"
        return "rocm" if getattr(self.profile, "vendor", "nvidia") == "amd" else "cuda"

    @property
    def grace_s(self) -> int:
        """Above preStop + drain, so the kubelet never SIGKILLs a pod that is still answering."""
        return self.prestop_s + self.drain_timeout_s + 5

    @property
    def bundle_mount(self) -> str:
        return f"{MODELS_DIR}/{self.name}"

    @property
    def image_variant(self) -> str:
        """deploy/docker/Dockerfile.<variant> builds the server image for this profile."""
        return image_variant(self.profile)


def _dns_name(text: str, what: str) -> str:
    if len(text) > 52 or not _DNS1123.match(text):
        raise UserError(f"{what} {text!r} is not a valid Kubernetes name: lowercase letters, digits and '-', "
                        "starting and ending with a letter or digit, at most 52 characters (suffixes are added)",
                        hint="pass --name with such a name")
    return text


def default_name(bundle_name: str) -> str:
    s = re.sub(r"[^a-z0-9-]+", "-", bundle_name.lower()).strip("-")[:52].strip("-")
    return s or "xinfer"


def _quantity_gi(nbytes: float) -> int:
    """Round up to 256 MiB steps (so requests read like 2560Mi, not 2684354560)."""
    step = 256 << 20
    return int(math.ceil(nbytes / step) * step)


def memory_mi(nbytes: int) -> str:
    return f"{nbytes >> 20}Mi"


def _plan_entry(plan_path: str, profile: str, model: str, notes: list[str]) -> dict[str, Any]:
    try:
        data = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--from-plan {plan_path}: no such file",
                        hint="write one with: xinfer-sdk plan BUNDLE -p PROFILE --target-qps N --json > plan.json") \
            from None
    except (OSError, ValueError) as exc:
        raise UserError(f"--from-plan {plan_path}: not a JSON plan ({exc})",
                        hint="write one with: xinfer-sdk plan BUNDLE -p PROFILE --target-qps N --json > plan.json") \
            from None
    entries = data.get("profiles") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        raise UserError(f"--from-plan {plan_path}: no 'profiles' list; expected the output of `xinfer-sdk plan --json`")
    entry = next((e for e in entries if isinstance(e, Mapping) and e.get("profile") == profile), None)
    if entry is None:
        have = ", ".join(str(e.get("profile")) for e in entries if isinstance(e, Mapping)) or "none"
        raise UserError(f"--from-plan {plan_path}: the plan has no entry for profile '{profile}' (it has: {have})",
                        hint=f"plan it with: xinfer-sdk plan BUNDLE -p {profile} --target-qps N --json")
    rec = entry.get("recommendation") or {}
    if not rec.get("feasible", False) or not rec.get("replicas"):
        raise UserError(f"--from-plan {plan_path}: profile '{profile}' cannot meet the plan's SLO "
                        f"({rec.get('reason') or 'no feasible policy'})",
                        hint="relax --p99 / --target-qps in `xinfer-sdk plan`, or pick another profile")
    if data.get("model") not in (None, model):
        notes.append(f"the plan was made for model '{data.get('model')}', this bundle is '{model}'")
    out = dict(entry)
    out["slo_p99_s"] = (data.get("slo") or {}).get("p99_s")
    return out


def resolve_spec(bundle: str, *, profile: str, image: str, name: str | None = None, namespace: str | None = None,
                 replicas: int | None = None, min_replicas: int | None = None, max_replicas: int | None = None,
                 autoscale: bool = True, target_queue_depth: float = 8.0, target_cpu_utilization: int = 70,
                 from_plan: str | None = None, cpu: float | None = None, memory: str | None = None,
                 bundle_pvc: str | None = None, bundle_subpath: str | None = None, bundle_url: str | None = None,
                 drain_timeout: str = "30s", prestop_delay: str = "10s", monitor: str | None = None,
                 monitor_labels: Sequence[str] = (), scrape_interval: str = "15s",
                 node_selector: Sequence[str] = (), runtime_class: str | None = None, gpu_label: str = "gfd",
                 bundle_url_secret: str | None = None,
                 api_key_secret: str | None = None, image_pull_policy: str = "IfNotPresent",
                 profiles_dirs: Sequence[str] = (), gpus_per_pod: int = 1, slo_p99: str | None = None,
                 runbook_base: str | None = None) -> DeploySpec:
    notes: list[str] = []
    b = open_bundle(bundle)
    prof = load_profile(profile, profiles_dirs=profiles_dirs)
    built_for = (b.manifest.profile or {}).get("name")
    if built_for and built_for != prof.name:
        notes.append(f"the bundle was built for profile '{built_for}', deployed with '{prof.name}'")
    if not image or image.startswith("-"):
        raise UserError("--image is required: the server image in your registry, e.g. registry.example.com/xinfer:0.1",
                        hint="build it with deploy/docker/Dockerfile.cpu or Dockerfile.cuda (docs/kubernetes.md)")
    if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
        notes.append(f"image {image!r} has no tag: Kubernetes pulls ':latest', which makes rollbacks ambiguous")
    dns = _dns_name(name or default_name(b.name), "name")
    if namespace is not None:
        _dns_name(namespace, "namespace")
    if sum(bool(x) for x in (bundle_pvc, bundle_url, bundle_url_secret)) > 1:
        raise UserError("--bundle-pvc, --bundle-url and --bundle-url-secret are exclusive: mount the bundle from a "
                        "volume, or fetch it with an init container")
    if bundle_url and not re.match(r"^(https?|file)://", bundle_url):
        raise UserError(f"--bundle-url {bundle_url!r}: expected an http(s):// (or file://) URL of a .tar.gz bundle",
                        hint="pack it with: tar -czf model.tar.gz -C BUNDLE .")
    if monitor is not None and monitor not in MONITORS:
        raise UserError(f"--monitor {monitor!r}: expected one of {', '.join(MONITORS)}")

    policy: dict[str, Any] | None = None
    plan_act: float = 0.0
    slo_s = parse_duration(slo_p99, field="--slo-p99") if slo_p99 is not None else None
    if slo_s is not None and slo_s <= 0:
        raise UserError(f"--slo-p99 must be above 0, got {slo_p99}")
    gpus_per_pod = _gpus_per_pod(gpus_per_pod, prof)
    if from_plan:
        entry = _plan_entry(from_plan, prof.name, b.name, notes)
        if slo_s is None and entry.get("slo_p99_s"):
            slo_s = float(entry["slo_p99_s"])
        rec = entry["recommendation"]
        policy = BatchPolicy.from_dict(rec["policy"], source=f"{from_plan}: policy").to_dict()
        if replicas is None:
            replicas = int(rec["replicas"])
        if min_replicas is None:
            min_replicas = int(rec["replicas"])
        notes.append(f"from the plan: {rec['replicas']} replica(s) for its target rate, batch policy "
                     f"max_batch_size {policy['max_batch_size']}, delay {policy['max_batch_delay']}, "
                     f"workers {policy['device_concurrency']}")
        act = float((entry.get("memory") or {}).get("activation_per_sample") or 0)
        plan_act = act * policy["max_batch_size"] * policy["device_concurrency"]
    replicas = 1 if replicas is None else int(replicas)
    min_r = replicas if min_replicas is None else int(min_replicas)
    max_r = max(min_r * 2, min_r + 1) if max_replicas is None else int(max_replicas)
    if replicas < 1 or min_r < 1:
        raise UserError(f"--replicas / --min-replicas must be at least 1, got {replicas} / {min_r}")
    if max_r < min_r:
        raise UserError(f"--max-replicas {max_r} is below --min-replicas {min_r}")
    if target_queue_depth <= 0:
        raise UserError(f"--target-queue-depth must be above 0, got {target_queue_depth}")
    if not 1 <= target_cpu_utilization <= 100:
        raise UserError(f"--target-cpu must be a percentage in 1..100, got {target_cpu_utilization}")

    k8s = prof.kubernetes
    cpu_req = float(cpu if cpu is not None else k8s.cpu)
    if cpu_req <= 0:
        raise UserError(f"--cpu must be above 0, got {cpu}")
    model_bytes = sum(a.bytes for a in b.manifest.artifacts.values() if a.role in ("model", "engine"))
    if memory is not None:
        from ..server.config import parse_size

        mem = parse_size(memory, field="--memory")
        if mem < 128 << 20:
            raise UserError(f"--memory {memory}: at least 128Mi is needed to start the server")
    else:
        # the profile's floor (libraries, runtime) + the weights three times over (file, session, prepacked),
        # + activations on the host where the engine runs there (cpu; unified memory: Jetson, GB10)
        mem = k8s.memory_gb * _GIB + 3 * model_bytes + (plan_act if prof.kind != "gpu" or prof.unified_memory else 0)
        # every further GPU loads its own session from the file: one more host copy of the weights while it does
        mem += (gpus_per_pod - 1) * model_bytes
    # ONNX Runtime threads per worker: the CPU request split over the workers (no oversubscription)
    workers = int((policy or b.manifest.batch or {}).get("device_concurrency") or prof.batch.device_concurrency)
    threads = max(1, int(cpu_req // max(1, workers))) if prof.kind == "cpu" else None

    selector: dict[str, str] = {"kubernetes.io/os": "linux", **dict(k8s.node_selector),
                                **gpu_selector(prof, gpu_label, notes)}
    notes += accelerator_notes(prof)
    for item in node_selector:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UserError(f"--node-selector {item!r}: expected KEY=VALUE")
        selector[k] = v
    labels: dict[str, str] = {}
    for item in monitor_labels:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UserError(f"--monitor-label {item!r}: expected KEY=VALUE (e.g. release=kube-prometheus-stack)")
        labels[k] = v
    if monitor is not None and not labels:
        notes.append("--monitor without --monitor-label: kube-prometheus-stack only selects monitors labelled "
                     "release=<its release name>; add --monitor-label release=...")
    tolerations = [{"key": k8s.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}] if k8s.gpu_resource else []
    drain = parse_duration(drain_timeout, field="--drain-timeout")
    prestop = parse_duration(prestop_delay, field="--prestop-delay")
    parse_duration(scrape_interval, field="--scrape-interval")
    return DeploySpec(
        name=dns, namespace=namespace, profile=prof, bundle_name=b.name, precision=b.manifest.precision,
        image=image, image_pull_policy=image_pull_policy, replicas=replicas, autoscale=autoscale,
        min_replicas=min_r, max_replicas=max_r, target_queue_depth=float(target_queue_depth),
        target_cpu_utilization=int(target_cpu_utilization), policy=policy, threads=threads, cpu=cpu_req,
        memory_bytes=_quantity_gi(mem), bundle_bytes=sum(a.bytes for a in b.manifest.artifacts.values()),
        bundle_pvc=None if (bundle_url or bundle_url_secret) else (bundle_pvc or f"{dns}-bundle"),
        bundle_subpath=bundle_subpath, bundle_url=bundle_url, bundle_url_secret=bundle_url_secret,
        manifest_sha256=sha256_file(b.root / MANIFEST_NAME), drain_timeout_s=int(math.ceil(drain)),
        prestop_s=int(math.ceil(prestop)), monitor=monitor, monitor_labels=labels, scrape_interval=scrape_interval,
        node_selector=selector, tolerations=tolerations, runtime_class=runtime_class or k8s.runtime_class,
        api_key_secret=api_key_secret, user_profiles=_user_profiles(prof, profiles_dirs), source_plan=from_plan,
        notes=notes, gpus_per_pod=gpus_per_pod, slo_p99_s=slo_s if slo_s is not None else DEFAULT_SLO_P99_S,
        runbook_base=runbook_base or RUNBOOK_BASE)


def _gpus_per_pod(n: int, prof: Profile) -> int:
    n = int(n)
    if n < 1:
        raise UserError(f"--gpus-per-pod must be at least 1, got {n}")
    if n > 1 and prof.kind != "gpu":
        raise UserError(f"--gpus-per-pod {n}: profile '{prof.name}' "
                        + ("has no GPU" if prof.kind == "cpu" else "is a Jetson module with one integrated GPU"),
                        hint="leave --gpus-per-pod at 1, or pick a data-center GPU profile")
    if n > 1 and prof.unified_memory:
        raise UserError(f"--gpus-per-pod {n}: profile '{prof.name}' has one GPU sharing the host's memory",
                        hint="leave --gpus-per-pod at 1 and scale with replicas")
    return n


def _user_profiles(prof: Profile, profiles_dirs: Sequence[str]) -> dict[str, str]:
    """YAML files of the profile's chain that the image does not ship (they travel in the ConfigMap)."""
    from ..profiles.loader import ProfileRegistry, builtin_dir

    builtin = builtin_dir().resolve()
    files = ProfileRegistry(profiles_dirs).files
    out: dict[str, str] = {}
    for i, name in enumerate(prof.chain or (prof.name,)):
        f = Path(prof.file) if i == 0 and prof.file else files.get(name)
        if f is not None and f.is_file() and f.resolve().parent != builtin:
            out[f"{name}.yaml"] = f.read_text(encoding="utf-8")
    return out
