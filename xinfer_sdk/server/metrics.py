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
    """prometheus_client collector for every model of a ``Service`` (+ GPUs when NVML or amdsmi is there)."""

    def __init__(self, service: Service, gpus: GpuStats | AmdGpuStats | None = None):
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
                    "(InvalidInput, QueueFull, ServerClosing, DeadlineExceeded, InferenceError, EngineFatal, "
                    "WorkersUnavailable, Cancelled).",
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
        healthy = G(f"{PREFIX}_workers_healthy", "Workers with a running engine now (of device_concurrency); 0 "
                    "while every worker is lost and being replaced.", labels=labels)
        restarts = C(f"{PREFIX}_worker_restarts", "Lost workers (fatal engine error, dead worker thread) replaced "
                     "by a new engine instance.", labels=labels)
        restart_fail = C(f"{PREFIX}_worker_restart_failures", "Attempts to replace a lost worker that failed "
                         "(retried with exponential backoff).", labels=labels)
        dev_batches = C(f"{PREFIX}_device_batches", "Batches executed on each device (a model placed on several "
                        "devices has one series per device).", labels=[*labels, "device"])
        dev_samples = C(f"{PREFIX}_device_inference_samples", "Samples (batch rows) inferred on each device.",
                        labels=[*labels, "device"])
        dev_compute = C(f"{PREFIX}_device_compute_seconds", "Engine time spent on each device.",
                        labels=[*labels, "device"])
        svc = self.service
        for s in svc.served_all():
            lv = [s.name, s.version]
            st = s.model.stats()
            req = st["requests"]
            success.add_metric(lv, req["success"])
            reasons: dict[str, int] = {}
            for src in (req["failed"], s.rejected):
                for k, v in src.items():
                    reasons[k] = reasons.get(k, 0) + v
            for k, v in req["rejected"].items():
                k = {"queue_full": "QueueFull", "closing": "ServerClosing",
                     "workers_unavailable": "WorkersUnavailable"}.get(k, k)
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
            w = st.get("workers") or {}
            healthy.add_metric(lv, w.get("healthy", pol.device_concurrency))
            restarts.add_metric(lv, w.get("restarts", 0))
            restart_fail.add_metric(lv, w.get("restart_failures", 0))
            for dev, d in device_stats(s.model, st).items():
                dev_batches.add_metric([*lv, dev], d.get("batches", 0))
                dev_samples.add_metric([*lv, dev], d.get("inferences", 0))
                dev_compute.add_metric([*lv, dev], d.get("compute_s", 0.0))
        yield from (success, failure, samples, batches, req_h, queue_h, comp_h, bs_h, depth, inflight, ready, info,
                    load_s, build_s, max_q, healthy, restarts, restart_fail, dev_batches, dev_samples, dev_compute)
        server_ready = G(f"{PREFIX}_server_ready", "1 when every model is ready and the server is not draining.")
        server_ready.add_metric([], 1.0 if svc.ready else 0.0)
        yield server_ready
        if self.gpus is not None:
            yield from self.gpus.collect(G)


def device_stats(model: Any, stats: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``Model.device_stats()`` ({device: {batches, inferences, compute_s}}); a model without it ran everything
    on its one device, so the model's own counters are that device's."""
    fn = getattr(model, "device_stats", None)
    if fn is not None:
        try:
            return {str(k): dict(v) for k, v in fn().items()}
        except Exception:  # a stats read must never break a scrape
            log.debug("device_stats() failed", exc_info=True)
    st = stats if stats is not None else model.stats()
    return {str(getattr(model, "device", "cpu")): {"batches": st["batches"], "inferences": st["samples"],
                                                   "compute_s": st["compute_s"]["sum"]}}


def _gpu_families(G: Any) -> tuple[Any, Any, Any, Any, Any]:
    """The GPU metric families, one set of names for NVML and amdsmi (docs/metrics.md)."""
    labels = ["gpu", "name"]
    return (G(f"{PREFIX}_gpu_utilization_ratio", "GPU busy fraction over the last sample period (0..1).",
              labels=labels),
            G(f"{PREFIX}_gpu_memory_used_bytes", "GPU memory in use.", labels=labels),
            G(f"{PREFIX}_gpu_memory_total_bytes", "GPU memory installed.", labels=labels),
            G(f"{PREFIX}_gpu_temperature_celsius", "GPU core temperature.", labels=labels),
            G(f"{PREFIX}_gpu_power_watts", "GPU board power draw.", labels=labels))


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
        util, used, total, temp, power = _gpu_families(G)
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


# amdsmi marks a reading the GPU does not report with "N/A" (its Python layer maps 0xFFFF to that); the C
# structs' docs say unsupported members are UINT32_MAX. Both mean "no reading".
_AMD_NA = (0xFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)
_MIB = 1024 * 1024


def _amd_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value in _AMD_NA:
        return None
    return None if math.isnan(float(value)) else float(value)


class AmdGpuStats:
    """amdsmi readings per AMD GPU, under the NVML collector's metric names; absent when amdsmi cannot start.

    Calls (the documented amdsmi Python API, amdsmi 7.0.2's amdsmi_interface.py): ``amdsmi_get_gpu_activity(h)``
    -> ``gfx_activity`` in % (the graphics/compute engine, NVML's ``utilization.gpu``);
    ``amdsmi_get_gpu_vram_usage(h)`` -> ``vram_used`` / ``vram_total`` in MB (amdsmi_vram_usage_t: "In MB", i.e.
    MiB); ``amdsmi_get_temp_metric(h, AmdSmiTemperatureType.HOTSPOT, AmdSmiTemperatureMetric.CURRENT)`` in °C, the
    die's hottest sensor (MI300 reports no EDGE sensor), else EDGE; ``amdsmi_get_power_info(h)`` ->
    ``current_socket_power`` (W, MI300 and newer), else ``socket_power``, else ``average_socket_power`` (MI200
    and older). The ``gpu`` label is ``amdsmi:N`` (amdsmi's handle order), which need not be the HIP index the
    ``rocm:N`` device uses. Never run on AMD hardware: tested with a recording double of amdsmi.
    """

    def __init__(self, amdsmi: Any):
        self.amdsmi = amdsmi
        self.handles: list[tuple[str, Any]] = []
        self.names: dict[str, str] = {}
        for i, h in enumerate(amdsmi.amdsmi_get_processor_handles()):
            label = f"amdsmi:{i}"
            info = self._read("amdsmi_get_gpu_asic_info", h) or {}
            self.handles.append((label, h))
            self.names[label] = str(info.get("market_name") or "AMD GPU").strip()

    @classmethod
    def open(cls) -> AmdGpuStats | None:
        try:
            import amdsmi
        except Exception:  # not installed, or installed without ROCm's libamd_smi.so (KeyError/OSError at import)
            return None
        try:  # reference-counted in amdsmi (amdsmi_init / amdsmi_shut_down): detection's shut_down leaves ours
            amdsmi.amdsmi_init(amdsmi.AmdSmiInitFlags.INIT_AMD_GPUS)
        except Exception as exc:  # AmdSmiLibraryException: no amdgpu driver
            log.info("amdsmi not available (%s): no AMD GPU metrics", exc)
            return None
        try:
            stats = cls(amdsmi)
        except Exception as exc:
            log.info("amdsmi query failed (%s): no AMD GPU metrics", exc)
            stats = None
        if stats is None or not stats.handles:
            try:
                amdsmi.amdsmi_shut_down()
            except Exception:
                pass
            return None
        return stats

    def _read(self, fn: str, *args: Any) -> Any:
        try:
            return getattr(self.amdsmi, fn)(*args)
        except Exception:  # AmdSmiLibraryException (AMDSMI_STATUS_NOT_SUPPORTED, ...): skip this reading
            return None

    def _temperature(self, h: Any) -> float | None:
        smi = self.amdsmi
        for sensor in (smi.AmdSmiTemperatureType.HOTSPOT, smi.AmdSmiTemperatureType.EDGE):
            t = _amd_number(self._read("amdsmi_get_temp_metric", h, sensor, smi.AmdSmiTemperatureMetric.CURRENT))
            if t is not None:
                return t
        return None

    def _power(self, h: Any) -> float | None:
        info = self._read("amdsmi_get_power_info", h) or {}
        for key in ("current_socket_power", "socket_power", "average_socket_power"):
            w = _amd_number(info.get(key))
            if w is not None and w > 0:
                return w
        return None

    def collect(self, G: Any) -> Iterator[Any]:
        util, used, total, temp, power = _gpu_families(G)
        for label, h in self.handles:
            lv = [label, self.names[label]]
            act = _amd_number((self._read("amdsmi_get_gpu_activity", h) or {}).get("gfx_activity"))
            if act is not None:
                util.add_metric(lv, act / 100.0)
            vram = self._read("amdsmi_get_gpu_vram_usage", h) or {}
            u, t = _amd_number(vram.get("vram_used")), _amd_number(vram.get("vram_total"))
            if u is not None and t is not None:
                used.add_metric(lv, u * _MIB)
                total.add_metric(lv, t * _MIB)
            c = self._temperature(h)
            if c is not None:
                temp.add_metric(lv, c)
            w = self._power(h)
            if w is not None:
                power.add_metric(lv, w)
        yield from (util, used, total, temp, power)


def open_gpu_stats() -> GpuStats | AmdGpuStats | None:
    """NVML's readings when NVML starts, else amdsmi's; None when neither (no GPU metrics)."""
    return GpuStats.open() or AmdGpuStats.open()


class Metrics:
    """The registry behind /metrics (one per server, so several servers can live in one process)."""

    def __init__(self, service: Service, *, gpus: bool = True):
        pc = require("prometheus_client", purpose="/metrics")
        self._generate = pc.generate_latest
        self.registry = pc.CollectorRegistry(auto_describe=False)
        self.registry.register(ModelCollector(service, open_gpu_stats() if gpus else None))

    def render(self) -> bytes:
        return self._generate(self.registry)
