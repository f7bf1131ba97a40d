"""Prometheus metrics, read from each model's batching-core counters at scrape time.

Nothing is recorded on the request path for this: a custom collector turns ``Model.stats()`` (which the
core keeps anyway) into metric families when Prometheus scrapes ``/metrics``. Every name is documented in
docs/metrics.md; the Grafana dashboard in deploy/grafana/ uses them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

from .._lazy import require
from .service import Service

log = logging.getLogger(__name__)

PREFIX = "xinfer"


def _buckets(h: dict[str, Any]) -> list[tuple[str, float]]:
    out = [(_le(b), float(c)) for b, c in zip(h["buckets"], h["cumulative"])]
    out.append(("+Inf", float(h["cumulative"][-1] if h["cumulative"] else 0)))
    return out


def _le(b: float) -> str:
    return str(int(b)) if float(b).is_integer() and b >= 1 else repr(float(b))


class ModelCollector:
    """prometheus_client collector for every model of a ``Service`` (+ GPUs when NVML is there)."""

    def __init__(self, service: Service, gpus: GpuStats | None = None):
        self.service = service
        self.gpus = gpus

    def describe(self) -> list:  # no eager collect at registration time
        return []

    def collect(self) -> Iterator[Any]:
        core = require("prometheus_client.core", purpose="/metrics")
        C, G, H = core.CounterMetricFamily, core.GaugeMetricFamily, core.HistogramMetricFamily
        labels = ["model", "version"]
        success = C(f"{PREFIX}_request_success", "Requests answered with outputs.", labels=labels)
        failure = C(f"{PREFIX}_request_failure", "Requests that failed or were refused, by reason "
                    "(InvalidInput, QueueFull, ServerClosing, DeadlineExceeded, InferenceError, Cancelled).",
                    labels=[*labels, "reason"])
        samples = C(f"{PREFIX}_inference_samples", "Samples (batch rows) inferred.", labels=labels)
        batches = C(f"{PREFIX}_batches", "Batches executed by the engine.", labels=labels)
        req_h = H(f"{PREFIX}_request_duration_seconds", "Time from entering the batching queue to the result, "
                  "per request.", labels=labels)
        queue_h = H(f"{PREFIX}_queue_duration_seconds", "Time a request waited in the batching queue.", labels=labels)
        comp_h = H(f"{PREFIX}_compute_duration_seconds", "Engine time per executed batch.", labels=labels)
        bs_h = H(f"{PREFIX}_batch_size", "Samples per executed batch.", labels=labels)
        depth = G(f"{PREFIX}_queue_depth", "Requests waiting in the batching queue now.", labels=labels)
        inflight = G(f"{PREFIX}_inflight_requests", "Requests accepted and not yet answered.", labels=labels)
        ready = G(f"{PREFIX}_model_ready", "1 when the model takes requests, 0 when draining or closed.",
                  labels=labels)
        info = G(f"{PREFIX}_model_info", "Always 1; labels describe how the model runs.",
                 labels=[*labels, "backend", "device", "precision", "max_batch_size", "workers"])
        load_s = G(f"{PREFIX}_model_load_seconds", "Seconds it took to load the model and start its workers.",
                   labels=labels)
        build_s = G(f"{PREFIX}_engine_build_seconds", "Seconds spent building the engine on this machine "
                    "(TensorRT plan); 0 when a cached plan or no build was needed.", labels=labels)
        max_q = G(f"{PREFIX}_queue_capacity", "max_queue_size of the batch policy (0 = unbounded).", labels=labels)
        svc = self.service
        for s in svc.models.values():
            lv = [s.name, s.version]
            st = s.model.stats()
            req = st["requests"]
            success.add_metric(lv, req["success"])
            reasons: dict[str, int] = {}
            for src in (req["failed"], s.rejected):
                for k, v in src.items():
                    reasons[k] = reasons.get(k, 0) + v
            for k, v in req["rejected"].items():
                k = {"queue_full": "QueueFull", "closing": "ServerClosing"}.get(k, k)
                reasons[k] = reasons.get(k, 0) + v
            for k, v in sorted(reasons.items()):
                failure.add_metric([*lv, k], v)
            samples.add_metric(lv, st["samples"])
            batches.add_metric(lv, st["batches"])
            for fam, key in ((req_h, "request_s"), (queue_h, "queue_wait_s"), (comp_h, "compute_s"),
                             (bs_h, "batch_size")):
                h = st[key]
                fam.add_metric(lv, _buckets(h), h["sum"])
            depth.add_metric(lv, st["queue_depth"])
            inflight.add_metric(lv, st["in_flight"])
            ready.add_metric(lv, 1.0 if (s.ready and not svc.draining) else 0.0)
            pol = s.model.policy
            info.add_metric([*lv, s.backend, s.device, str(s.precision), str(s.model.max_batch_size),
                             str(pol.device_concurrency)], 1.0)
            load_s.add_metric(lv, s.load_seconds)
            build_s.add_metric(lv, s.engine_build_seconds)
            max_q.add_metric(lv, pol.max_queue_size)
        yield from (success, failure, samples, batches, req_h, queue_h, comp_h, bs_h, depth, inflight, ready, info,
                    load_s, build_s, max_q)
        server_ready = G(f"{PREFIX}_server_ready", "1 when every model is ready and the server is not draining.")
        server_ready.add_metric([], 1.0 if svc.ready else 0.0)
        yield server_ready
        if self.gpus is not None:
            yield from self.gpus.collect(G)


class GpuStats:
    """NVML readings (pynvml from nvidia-ml-py) per GPU; absent when NVML cannot start (no driver/GPU).

    The ``gpu`` label is the CUDA index this process uses (``cuda:N``), not NVML's PCI-order index: they differ
    under ``CUDA_VISIBLE_DEVICES`` and on mixed hosts. GPUs hidden from this process are not reported; when
    the CUDA order cannot be known (a mixed host without ``CUDA_DEVICE_ORDER=PCI_BUS_ID``) the label is
    ``nvml:N`` so it is never mistaken for a CUDA index.
    """

    def __init__(self, nvml: Any, env: Mapping[str, str] | None = None):
        from ..profiles.detect import cuda_to_nvml_index, cuda_view, read_nvml_gpus

        self.nvml = nvml
        gpus, _ = read_nvml_gpus()
        gpus = gpus or []
        view = cuda_view(gpus, env)
        labels: dict[int, str] = {}
        if view.exact:
            for c in range(len(view.nvml)):
                n = cuda_to_nvml_index(c, gpus=gpus, env=env)
                if n is not None:
                    labels[n] = str(c)
        else:
            labels = {g.index: f"nvml:{g.index}" for g in gpus}
        self.handles = [(labels[i], nvml.nvmlDeviceGetHandleByIndex(i)) for i in sorted(labels)]
        self.names = {labels[g.index]: g.name for g in gpus if g.index in labels}

    @classmethod
    def open(cls) -> GpuStats | None:
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError: no driver, no GPU, insufficient permissions
            log.info("NVML not available (%s): no GPU metrics", exc)
            return None
        try:
            stats = cls(pynvml)
        except Exception as exc:
            log.info("NVML query failed (%s): no GPU metrics", exc)
            stats = None
        if stats is None or not stats.handles:
            try:
                pynvml.nvmlShutdown()  # balance our nvmlInit (NVML counts them)
            except Exception:
                pass
            return None
        return stats

    def _read(self, fn: str, *args: Any) -> Any:
        try:
            return getattr(self.nvml, fn)(*args)
        except Exception:  # a reading a GPU does not support (power on some boards): skip it
            return None

    def collect(self, G: Any) -> Iterator[Any]:
        nv = self.nvml
        labels = ["gpu", "name"]
        util = G(f"{PREFIX}_gpu_utilization_ratio", "GPU busy fraction over the last sample period (0..1).",
                 labels=labels)
        used = G(f"{PREFIX}_gpu_memory_used_bytes", "GPU memory in use.", labels=labels)
        total = G(f"{PREFIX}_gpu_memory_total_bytes", "GPU memory installed.", labels=labels)
        temp = G(f"{PREFIX}_gpu_temperature_celsius", "GPU core temperature.", labels=labels)
        power = G(f"{PREFIX}_gpu_power_watts", "GPU board power draw.", labels=labels)
        for label, h in self.handles:
            lv = [label, self.names[label]]
            u = self._read("nvmlDeviceGetUtilizationRates", h)
            if u is not None:
                util.add_metric(lv, u.gpu / 100.0)
            m = self._read("nvmlDeviceGetMemoryInfo", h)
            if m is not None:
                used.add_metric(lv, float(m.used))
                total.add_metric(lv, float(m.total))
            t = self._read("nvmlDeviceGetTemperature", h, nv.NVML_TEMPERATURE_GPU)
            if t is not None:
                temp.add_metric(lv, float(t))
            p = self._read("nvmlDeviceGetPowerUsage", h)
            if p is not None and not math.isnan(p):
                power.add_metric(lv, p / 1000.0)
        yield from (util, used, total, temp, power)


class Metrics:
    """The registry behind /metrics (one per server, so several servers can live in one process)."""

    def __init__(self, service: Service, *, gpus: bool = True):
        pc = require("prometheus_client", purpose="/metrics")
        self._generate = pc.generate_latest
        self.registry = pc.CollectorRegistry(auto_describe=False)
        self.registry.register(ModelCollector(service, GpuStats.open() if gpus else None))

    def render(self) -> bytes:
        return self._generate(self.registry)
