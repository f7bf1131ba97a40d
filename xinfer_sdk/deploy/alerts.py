"""Prometheus alerting rules for the server's /metrics (docs/metrics.md#alerts), from one source.

The same rule groups are written three ways:

- ``deploy/prometheus/xinfer-alerts.yaml``: a plain rules file (``rule_files:`` of any Prometheus), with the
  default thresholds; regenerate it with ``python -m xinfer_sdk.deploy.alerts > deploy/prometheus/xinfer-alerts.yaml``;
- ``xinfer-sdk deploy k8s``: ``prometheus/xinfer-alerts.yaml`` in the output (scoped to the deployment's pods),
  and a ``PrometheusRule`` in the manifests and the chart when the Prometheus Operator is used (``--monitor``);
- ``rules_yaml(AlertSettings(...))`` for anything else.

Every metric name is one ``xinfer_sdk/server/metrics.py`` exports. Every alert carries ``severity`` and a
``runbook_url`` whose anchor is a heading of docs/metrics.md. ``deploy/prometheus/xinfer-alerts.test.yaml`` holds
``promtool test rules`` cases for each alert, firing and not firing.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from typing import Any

from ..errors import UserError

#: where the runbooks are (docs/metrics.md of this repository); override with ``--runbook-base`` to point at the
#: copy your team reads (an internal Git host, a wiki)
RUNBOOK_BASE = "docs/metrics.md"
# server-side failures (HTTP 5xx / gRPC INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED): ServerClosing (503 while a pod
# drains) is left out, a rollout produces it by design
SERVER_ERRORS = "InferenceError|EngineFatal|WorkersUnavailable|DeadlineExceeded"
CLIENT_ERRORS = "InvalidInput"       # 400: the request did not match the model or the protocol
REJECTED = "QueueFull"               # 429
TOTAL = '__name__=~"xinfer_request_(success|failure)_total"'
BY = "namespace, model"              # per model (and namespace in a cluster), over every replica


@dataclasses.dataclass(frozen=True)
class AlertSettings:
    """Thresholds of the alerts; the defaults are the shipped rules file's."""

    slo_p99_s: float = 0.1           # server-side p99 (xinfer_request_duration_seconds) the model must stay under
    queue_depth: float = 16.0        # requests waiting per replica (5-minute average) above which growth alerts
    server_error_ratio: float = 0.01
    client_error_ratio: float = 0.05
    rejected_ratio: float = 0.01
    gpu_temperature_c: float = 85.0
    gpu_memory_ratio: float = 0.95
    selector: str = ""               # label matchers added to every xinfer_* selector ('' = all series)
    target: str = 'job="xinfer"'     # matchers of the scrape target's `up` series
    deployment: str | None = None    # Kubernetes: the Deployment (kube-state-metrics' unavailable replicas)
    namespace: str | None = None
    runbook_base: str = RUNBOOK_BASE

    def __post_init__(self) -> None:
        for name in ("slo_p99_s", "queue_depth", "gpu_temperature_c"):
            if not getattr(self, name) > 0:
                raise UserError(f"alert threshold {name} must be above 0, got {getattr(self, name)}")
        for name in ("server_error_ratio", "client_error_ratio", "rejected_ratio", "gpu_memory_ratio"):
            if not 0 < getattr(self, name) <= 1:
                raise UserError(f"alert threshold {name} must be a fraction in (0, 1], got {getattr(self, name)}")


def anchor(alert: str) -> str:
    """The GitHub anchor of the docs/metrics.md heading ``### <alert>``."""
    return re.sub(r"[^a-z0-9 _-]", "", alert.lower()).replace(" ", "-")


def _num(x: float) -> str:
    return f"{x:g}"


def _sel(s: AlertSettings, *more: str) -> str:
    parts = [p for p in (s.selector, *more) if p]
    return "{" + ",".join(parts) + "}" if parts else ""


def _ratio(s: AlertSettings, reasons: str) -> str:
    return (f"sum by ({BY}) (rate(xinfer_request_failure_total{_sel(s, f'reason=~{_q(reasons)}')}[5m]))\n"
            f"  / sum by ({BY}) (rate({_sel(s, TOTAL)}[5m]))")


def _q(text: str) -> str:
    return '"' + text + '"'


def _alert(s: AlertSettings, name: str, expr: str, for_: str, severity: str, summary: str,
           description: str) -> dict[str, Any]:
    labels = {"severity": severity}
    if s.deployment:
        labels["deployment"] = s.deployment
    return {"alert": name, "expr": expr, "for": for_, "labels": labels,
            "annotations": {"summary": summary, "description": description,
                            "runbook_url": f"{s.runbook_base}#{anchor(name)}"}}


def alert_rules(s: AlertSettings) -> list[dict[str, Any]]:
    m = "{{ $labels.model }}"
    where = "{{ with $labels.namespace }} in namespace {{ . }}{{ end }}"
    inst = "{{ $labels.instance }}"
    rules = [
        _alert(s, "XinferP99OverSLO",
               f"histogram_quantile(0.99, sum by ({BY}, le) "
               f"(rate(xinfer_request_duration_seconds_bucket{_sel(s)}[5m])))\n  > {_num(s.slo_p99_s)}",
               "10m", "warning", f"Model {m}: p99 latency over the {_num(s.slo_p99_s * 1000)} ms SLO",
               f"The server-side p99 of model {m}{where} is {{{{ $value | humanizeDuration }}}} (SLO "
               f"{_num(s.slo_p99_s * 1000)} ms, 5-minute window). Compare queue wait and compute on the dashboard."),
        _alert(s, "XinferQueueGrowing",
               f"avg by ({BY}) (avg_over_time(xinfer_queue_depth{_sel(s)}[5m])) > {_num(s.queue_depth)}\n"
               f"  and avg by ({BY}) (deriv(xinfer_queue_depth{_sel(s)}[10m])) > 0",
               "10m", "warning", f"Model {m}: batching queue keeps growing",
               f"Model {m}{where} has {{{{ $value | humanize }}}} requests waiting per replica on average and the "
               f"queue is still growing: the replicas do not keep up with the arrival rate."),
        _alert(s, "XinferQueueNearlyFull",
               f"avg_over_time(xinfer_queue_depth{_sel(s)}[1m])\n  / (xinfer_queue_capacity{_sel(s)} > 0) > 0.8",
               "2m", "critical", f"Model {m}: queue over 80% of max_queue_size on {inst}",
               f"The batching queue of model {m} on {inst} is {{{{ $value | humanizePercentage }}}} full; at 100% "
               "requests are refused with 429."),
        _alert(s, "XinferServerErrors", f"{_ratio(s, SERVER_ERRORS)}\n  > {_num(s.server_error_ratio)}",
               "5m", "critical", f"Model {m}: server errors (5xx) over {_num(s.server_error_ratio * 100)}%",
               f"{{{{ $value | humanizePercentage }}}} of the requests to model {m}{where} fail on the server "
               f"({SERVER_ERRORS.replace('|', ', ')})."),
        _alert(s, "XinferRequestsRejected", f"{_ratio(s, REJECTED)}\n  > {_num(s.rejected_ratio)}",
               "5m", "warning", f"Model {m}: requests refused with 429 (queue full)",
               f"{{{{ $value | humanizePercentage }}}} of the requests to model {m}{where} are refused because "
               "the batching queue is full."),
        _alert(s, "XinferClientErrors", f"{_ratio(s, CLIENT_ERRORS)}\n  > {_num(s.client_error_ratio)}",
               "15m", "info", f"Model {m}: invalid requests (4xx) over {_num(s.client_error_ratio * 100)}%",
               f"{{{{ $value | humanizePercentage }}}} of the requests to model {m}{where} do not match the "
               "model (400 InvalidInput): a client sends the wrong shape, datatype or input name."),
        _alert(s, "XinferGpuTemperatureHigh",
               f"xinfer_gpu_temperature_celsius{_sel(s)} > {_num(s.gpu_temperature_c)}",
               "10m", "warning", f"GPU {{{{ $labels.gpu }}}} on {inst} over {_num(s.gpu_temperature_c)} degrees C",
               f"GPU {{{{ $labels.gpu }}}} ({{{{ $labels.name }}}}) on {inst} is at {{{{ $value }}}} degrees C: it "
               "throttles its clocks, and latency rises."),
        _alert(s, "XinferGpuMemoryHigh",
               f"xinfer_gpu_memory_used_bytes{_sel(s)}\n  / xinfer_gpu_memory_total_bytes{_sel(s)} "
               f"> {_num(s.gpu_memory_ratio)}",
               "10m", "warning", f"GPU {{{{ $labels.gpu }}}} on {inst}: memory over "
               f"{_num(s.gpu_memory_ratio * 100)}% used",
               f"GPU {{{{ $labels.gpu }}}} ({{{{ $labels.name }}}}) on {inst} has {{{{ $value | humanizePercentage }}}}"
               " of its memory in use: a larger batch or another model may fail to allocate."),
        _alert(s, "XinferReplicaNotReady", f"xinfer_server_ready{_sel(s)} == 0",
               "5m", "warning", f"Server {inst} not ready",
               f"The server on {inst} reports not ready (/v2/health/ready) for 5 minutes: a model is not loaded, "
               "every worker of a model is lost, or it is draining."),
        _alert(s, "XinferTargetDown", f"up{{{s.target}}} == 0",
               "5m", "critical", f"Metrics endpoint {inst} down",
               f"Prometheus cannot scrape {inst} (job {{{{ $labels.job }}}}): the server is down or unreachable."),
    ]
    if s.deployment:
        ns = f',namespace="{s.namespace}"' if s.namespace else ""
        rules.append(_alert(s, "XinferReplicasUnavailable",
                            f'kube_deployment_status_replicas_unavailable{{deployment="{s.deployment}"{ns}}} > 0',
                            "15m", "warning",
                            f"Deployment {s.deployment}: {{{{ $value }}}} replica(s) unavailable",
                            f"Deployment {s.deployment}{where} has replicas that are not ready for 15 minutes "
                            "(kube-state-metrics): pending for a GPU, failing the readiness probe, or crash-looping."))
    return rules


def rule_groups(s: AlertSettings) -> list[dict[str, Any]]:
    return [{"name": "xinfer.alerts", "rules": alert_rules(s)}]


def rules_yaml(s: AlertSettings, *, header: str = "") -> str:
    from .values import yaml_text

    head = header or ("# Prometheus alerting rules for xinfer-sdk's /metrics (docs/metrics.md#alerts).\n"
                      "# Generated by `python -m xinfer_sdk.deploy.alerts`; check with "
                      "`promtool check rules` and `promtool test rules`.\n")
    return head + yaml_text({"groups": rule_groups(s)})


def main(argv: list[str] | None = None) -> int:
    sys.stdout.write(rules_yaml(AlertSettings()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
