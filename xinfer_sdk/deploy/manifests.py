"""The Kubernetes objects of one deployment, built once for both the plain manifests and the Helm chart.

Each builder returns a plain dict with ``Ref`` leaves (``values.py``): where a Helm user would expect a
knob, the value is registered in ``values.yaml`` and read back from there.
"""

from __future__ import annotations

from typing import Any

from .._version import __version__
from .alerts import rule_groups
from .spec import (
    CACHE_DIR,
    CONFIG_DIR,
    GRPC_MAX_CONNECTION_AGE,
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    QUEUE_METRIC,
    RUN_AS,
    DeploySpec,
    memory_mi,
)
from .values import Values

API_KEY_ENV = "XINFER_API_KEY"


def quantity(x: float) -> str:
    """8 -> '8', 2.5 -> '2500m' (a Kubernetes quantity)."""
    return str(int(x)) if float(x).is_integer() else f"{int(round(x * 1000))}m"


def selector_labels(spec: DeploySpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "xinfer-server", "app.kubernetes.io/instance": spec.name}


def labels(spec: DeploySpec) -> dict[str, str]:
    return {**selector_labels(spec), "app.kubernetes.io/component": "inference-server",
            "app.kubernetes.io/managed-by": "xinfer-sdk", "app.kubernetes.io/version": __version__,
            "xinfer.dev/profile": spec.profile.name, "xinfer.dev/model": spec.bundle_name}


def _meta(spec: DeploySpec, name: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, "labels": {**labels(spec), **(extra or {})}}
    if spec.namespace:
        m["namespace"] = spec.namespace
    return m


NETWORK_LIMITS = {"header_timeout": "10s", "body_timeout": "30s", "keepalive_timeout": "15s", "idle_timeout": "30s",
                  "max_connections": 4096}


def server_config(spec: DeploySpec) -> dict[str, Any]:
    """The server's config.yaml (docs/serving.md), mounted from the ConfigMap."""
    # drain_timeout is on the command line (a value the grace period is computed from, in the chart too)
    server: dict[str, Any] = {"host": "0.0.0.0", "port": HTTP_PORT, "grpc_port": GRPC_PORT,
                              "metrics_port": METRICS_PORT, "grpc_max_connection_age": GRPC_MAX_CONNECTION_AGE,
                              # the network limits (docs/security.md), written out so `serverConfig` shows them; behind
                              # an L7 proxy keep keepalive_timeout above the proxy's upstream idle timeout
                              **NETWORK_LIMITS}
    if spec.api_key_secret:
        server["api_key_env"] = API_KEY_ENV
    model: dict[str, Any] = {"name": spec.bundle_name, "path": spec.bundle_mount, "profile": spec.profile.name,
                             "device": spec.device}
    if spec.threads:
        model["threads"] = spec.threads
    if spec.policy:
        model["batch"] = {k: v for k, v in spec.policy.items() if v is not None}
    return {"server": server, "models": [model]}


def configmap(spec: DeploySpec, v: Values) -> dict[str, Any]:
    data: dict[str, Any] = {"config.yaml": v.text("serverConfig", server_config(spec))}
    for fname, text in sorted(spec.user_profiles.items()):
        data[f"profile-{fname}"] = text
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(spec, f"{spec.name}-config"), "data": data}


def _security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}}


def _resources(spec: DeploySpec) -> dict[str, Any]:
    # No CPU limit: CFS throttling shows up as tail latency; memory limit = request so an over-large batch
    # gets this pod OOM-killed (and restarted) instead of its neighbours; the GPU is a whole device.
    mem = memory_mi(spec.memory_bytes)
    res: dict[str, Any] = {"requests": {"cpu": quantity(spec.cpu), "memory": mem}, "limits": {"memory": mem}}
    if spec.gpu:
        gpu = spec.profile.kubernetes.gpu_resource
        res["requests"][gpu] = str(spec.gpus_per_pod)
        res["limits"][gpu] = str(spec.gpus_per_pod)
    return res


def _volumes(spec: DeploySpec, v: Values) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    mounts: list[dict[str, Any]] = [
        {"name": "bundle", "mountPath": spec.bundle_mount, "readOnly": True},
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "cache", "mountPath": CACHE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if spec.bundle_pvc is None:  # fetched by the init container
        bundle: dict[str, Any] = {"name": "bundle", "emptyDir": {"sizeLimit": v.ref("bundle.sizeLimit",
                                                                                  _size_limit(spec))}}
    else:
        pvc: dict[str, Any] = {"claimName": v.ref("bundle.pvc.claimName", spec.bundle_pvc), "readOnly": True}
        bundle = {"name": "bundle", "persistentVolumeClaim": pvc}
        mounts[0]["subPath"] = v.ref("bundle.pvc.subPath", spec.bundle_subpath or "", when="bundle.pvc.subPath")
    vols = [bundle, {"name": "config", "configMap": {"name": f"{spec.name}-config"}},
            {"name": "cache", "emptyDir": {"sizeLimit": "8Gi" if spec.gpu else "1Gi"}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}}]
    return vols, mounts


def _size_limit(spec: DeploySpec) -> str:
    """Room for the unpacked bundle and an engine built beside it: twice its size + 1 GiB, in 256 MiB steps."""
    step = 256 << 20
    return memory_mi(-(-(2 * spec.bundle_bytes + (1 << 30)) // step) * step)


def _probe(path: str, *, period: int, failures: int, timeout: int) -> dict[str, Any]:
    # on the metrics port: it serves health only, stays open through a drain, and never needs the API key
    return {"httpGet": {"path": path, "port": "metrics"}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": timeout}


def deployment(spec: DeploySpec, v: Values) -> dict[str, Any]:
    volumes, mounts = _volumes(spec, v)
    env: list[dict[str, Any]] = [{"name": "XINFER_CACHE_DIR", "value": CACHE_DIR}, {"name": "HOME", "value": "/tmp"},
                                 {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}]
    if spec.user_profiles:
        env.append({"name": "XINFER_PROFILES_PATH", "value": f"{CONFIG_DIR}/profiles"})
        volumes[1]["configMap"]["items"] = [{"key": "config.yaml", "path": "config.yaml"}] + [
            {"key": f"profile-{f}", "path": f"profiles/{f}"} for f in sorted(spec.user_profiles)]
    if spec.api_key_secret:
        env.append({"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": v.ref("apiKey.secretName",
                                                                                      spec.api_key_secret),
                                                                      "key": "api-key"}}})
    # A TensorRT engine built on first start can take minutes: the startup probe allows 10 (5 on a CPU)
    startup_failures = 120 if spec.kind != "cpu" else 60
    server = {
        "name": "server",
        "image": v.ref("image", spec.image),
        "imagePullPolicy": v.ref("imagePullPolicy", spec.image_pull_policy),
        "args": ["serve", "--config", f"{CONFIG_DIR}/config.yaml",
                 "--drain-timeout", v.ref("drainTimeoutSeconds", str(spec.drain_timeout_s))],
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                  {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": v.ref("resources", _resources(spec)),
        "startupProbe": _probe("/v2/health/live", period=5, failures=startup_failures, timeout=2),
        "readinessProbe": _probe("/v2/health/ready", period=5, failures=2, timeout=2),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=3, timeout=5),
        # Endpoints drop a terminating pod asynchronously: keep serving while they do, then SIGTERM drains
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", v.ref("lifecycle.preStopSleepSeconds",
                                                                      str(spec.prestop_s))]}}},
        "securityContext": _security(),
        "volumeMounts": mounts,
    }
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # preStop + drain + 5 s, computed from the two values, so raising either cannot get a pod SIGKILLed
        "terminationGracePeriodSeconds": v.sum_of(("lifecycle.preStopSleepSeconds", "drainTimeoutSeconds"), 5),
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "nodeSelector": v.ref("nodeSelector", spec.node_selector),
        "tolerations": v.ref("tolerations", spec.tolerations),
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": selector_labels(spec)}}],
        "containers": [server],
        "volumes": volumes,
    }
    pod["runtimeClassName"] = v.ref("runtimeClassName", spec.runtime_class or "", when="runtimeClassName")
    if spec.bundle_pvc is None:
        fetch_env: list[dict[str, Any]] = [{"name": "HOME", "value": "/tmp"}]
        if spec.bundle_url_secret:  # the URL is a credential: from a Secret, never in the pod spec
            source: Any = "--url-env"
            fetch_env.append({"name": "XINFER_BUNDLE_URL", "valueFrom": {"secretKeyRef": {
                "name": v.ref("bundle.urlSecret", spec.bundle_url_secret), "key": "url"}}})
            url: Any = "XINFER_BUNDLE_URL"
        else:
            source, url = "--url", v.ref("bundle.url", spec.bundle_url)
        pod["initContainers"] = [{
            "name": "fetch-bundle",
            "image": v.ref("image", spec.image),
            "imagePullPolicy": v.ref("imagePullPolicy", spec.image_pull_policy),
            # --sha256 pins the bundle's manifest, which lists every artifact's checksum: a swapped archive fails
            "args": ["fetch", source, url, "--sha256", v.ref("bundle.manifestSha256", spec.manifest_sha256),
                     spec.bundle_mount],
            "env": fetch_env,
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
            "securityContext": _security(),
            "volumeMounts": [{"name": "bundle", "mountPath": spec.bundle_mount},
                             {"name": "tmp", "mountPath": "/tmp"}],
        }]
    annotations: dict[str, Any] = {"xinfer.dev/config-sha256": v.hash_of("serverConfig")}
    if spec.monitor is None:  # the community Prometheus chart's pod-annotation scrape job
        annotations.update({"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT),
                            "prometheus.io/path": "/metrics"})
    body: dict[str, Any] = {
        "replicas": v.ref("replicas", spec.replicas, when="!autoscaling.enabled"),
        # the startup budget plus an image pull (GB-sized CUDA / L4T images), so `kubectl rollout status` and
        # GitOps tools do not report a slow but healthy first start as failed
        "progressDeadlineSeconds": 5 * startup_failures + (900 if spec.kind != "cpu" else 300),
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": selector_labels(spec)},
        # never below the current capacity during a rollout (a GPU cluster needs one spare GPU for the surge)
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {"metadata": {"labels": labels(spec), "annotations": annotations}, "spec": pod},
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(spec, spec.name), "spec": body}


def services(spec: DeploySpec, v: Values) -> list[dict[str, Any]]:
    ports = [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
             {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
              "appProtocol": "kubernetes.io/h2c"},
             {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}]
    main = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(spec, spec.name, {"xinfer.dev/service": "api"}),
            "spec": {"type": v.ref("service.type", "ClusterIP"), "selector": selector_labels(spec), "ports": ports}}
    # gRPC keeps one HTTP/2 connection per client: a ClusterIP pins it to one pod, so pods added by the
    # autoscaler get none of that traffic. A headless Service lets gRPC clients balance per pod
    # (dns:///NAME-headless:8001 with round_robin).
    headless = {"apiVersion": "v1", "kind": "Service",
                "metadata": _meta(spec, f"{spec.name}-headless", {"xinfer.dev/service": "headless"}),
                "spec": {"clusterIP": "None", "selector": selector_labels(spec), "ports": ports[:2]}}
    return [main, headless]


def pdb(spec: DeploySpec, v: Values) -> dict[str, Any]:
    # maxUnavailable (not minAvailable): a single-replica deployment can still be evicted for node drains
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(spec, spec.name),
            "spec": {"maxUnavailable": v.ref("podDisruptionBudget.maxUnavailable", 1),
                     "selector": {"matchLabels": selector_labels(spec)}}}


def hpa(spec: DeploySpec, v: Values) -> dict[str, Any]:
    a = "autoscaling."
    metrics = [
        {"type": "Pods", "pods": {
            "metric": {"name": QUEUE_METRIC, "selector": {"matchLabels": {"model": spec.bundle_name}}},
            "target": {"type": "AverageValue",
                       "averageValue": v.ref(a + "targetQueueDepth", quantity(spec.target_queue_depth))}}},
        # the fallback while the custom metric is missing (adapter down, no scrape yet): the HPA scales up on
        # the metrics it can read and never scales down on a partial view
        {"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": v.ref(a + "targetCPUUtilization",
                                                               spec.target_cpu_utilization)}}},
    ]
    behavior = {
        "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15},
                                 {"type": "Pods", "value": 4, "periodSeconds": 15}]},
        "scaleDown": {"stabilizationWindowSeconds": 300,
                      "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}]},
    }
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _meta(spec, spec.name),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
                     "minReplicas": v.ref(a + "minReplicas", spec.min_replicas),
                     "maxReplicas": v.ref(a + "maxReplicas", spec.max_replicas),
                     "metrics": metrics, "behavior": behavior}}


def monitor(spec: DeploySpec, v: Values, kind: str) -> dict[str, Any]:
    meta = _meta(spec, spec.name)
    meta["labels"].update(spec.monitor_labels)
    endpoint = {"port": "metrics", "path": "/metrics", "interval": v.ref("monitoring.interval", spec.scrape_interval)}
    if kind == "servicemonitor":
        return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": meta,
                "spec": {"selector": {"matchLabels": {**selector_labels(spec), "xinfer.dev/service": "api"}},
                         "endpoints": [endpoint]}}
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": meta,
            "spec": {"selector": {"matchLabels": selector_labels(spec)}, "podMetricsEndpoints": [endpoint]}}


def prometheus_rule(spec: DeploySpec, v: Values) -> dict[str, Any]:
    """The alert rules (alerts.py) as a Prometheus Operator PrometheusRule, labelled like the monitor so the same
    ruleSelector picks it. The groups are one value: edit thresholds in values.yaml (their annotations hold
    Prometheus templates, which Helm must not read, and values are not templated)."""
    meta = _meta(spec, spec.name)
    meta["labels"].update(spec.monitor_labels)
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": meta,
            "spec": {"groups": v.ref("prometheusRule.groups", rule_groups(spec.alert_settings))}}


def adapter_rule() -> dict[str, Any]:
    """prometheus-adapter: expose the per-pod queue depth as the custom metric the HPA reads."""
    return {
        "seriesQuery": f'{QUEUE_METRIC}{{namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": f"^{QUEUE_METRIC}$", "as": QUEUE_METRIC},
        # averaged over 1 minute: one scrape catches the queue at a random instant of a batching cycle
        "metricsQuery": "sum by (<<.GroupBy>>) (avg_over_time(<<.Series>>{<<.LabelMatchers>>}[1m]))",
    }


def documents(spec: DeploySpec, v: Values) -> list[tuple[str, dict[str, Any], str | None]]:
    """(file name, object, values flag that enables it) for every object, in apply order. Objects whose flag is
    off are still returned: the chart keeps them behind ``{{- if }}``; the plain manifests leave them out."""
    v.flag("autoscaling.enabled", spec.autoscale)
    docs: list[tuple[str, dict[str, Any], str | None]] = [("configmap.yaml", configmap(spec, v), None)]
    docs.append(("deployment.yaml", deployment(spec, v), None))
    main, headless = services(spec, v)
    docs += [("service.yaml", main, None), ("service-headless.yaml", headless, None),
             ("poddisruptionbudget.yaml", pdb(spec, v), None), ("hpa.yaml", hpa(spec, v), "autoscaling.enabled")]
    for kind, key in (("servicemonitor", "serviceMonitor"), ("podmonitor", "podMonitor")):
        v.flag(f"{key}.enabled", spec.monitor == kind)
        docs.append((f"{kind}.yaml", monitor(spec, v, kind), f"{key}.enabled"))
    v.flag("prometheusRule.enabled", spec.monitor is not None)
    docs.append(("prometheusrule.yaml", prometheus_rule(spec, v), "prometheusRule.enabled"))
    return docs
