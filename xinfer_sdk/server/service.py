"""What the HTTP and gRPC front ends share: the served models, readiness, drain state, and the KServe /
Triton documents (server and model metadata, model configuration, statistics).

Inference goes straight into each model's batching core from the event loop thread: validate, enqueue with
an asyncio future (the core completes every future of a batch in ONE ``call_soon_threadsafe``), answer when
the future is done. No thread per request, no executor hop.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import InvalidInput, ModelNotFound, QueueFull, ServerClosing, Unauthorized, UserError
from ..runtime.batcher import ASYNC

log = logging.getLogger(__name__)

SERVER_NAME = "xinfer-sdk"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository", "statistics", "schedule_policy"]
_PLATFORMS = {"onnxruntime": ("onnxruntime_onnx", "onnxruntime"), "tensorrt": ("tensorrt_plan", "tensorrt"),
              "torch": ("pytorch_libtorch", "pytorch")}
_TRITON_TYPES = {"BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32",
                 "UINT64": "TYPE_UINT64", "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32",
                 "INT64": "TYPE_INT64", "FP16": "TYPE_FP16", "FP32": "TYPE_FP32", "FP64": "TYPE_FP64",
                 "BYTES": "TYPE_STRING"}


class Served:
    """One model version as the server sees it: the runtime ``Model`` plus the documents clients ask for."""

    def __init__(self, model: Any, load_seconds: float = 0.0, version_policy: Mapping[str, Any] | None = None):
        self.model = model
        self.retired = False  # replaced or unloaded: takes no new request
        self.name: str = model.name
        self.version: str = str(getattr(model, "version", "1"))
        self.load_seconds = float(load_seconds)
        self.batcher = model.batcher
        self.output_specs = list(model.outputs)
        info = model.describe()
        self.backend = info.get("backend", "unknown")
        self.device = info.get("device", "cpu")
        self.precision = info.get("precision", "")
        builds = [w.get("build_seconds") for w in info.get("workers", []) if w.get("build_seconds")]
        self.engine_build_seconds = float(max(builds)) if builds else 0.0
        self.platform, self.triton_backend = _PLATFORMS.get(self.backend, (self.backend, self.backend))
        self.version_policy = dict(version_policy or {"latest": {"num_versions": 1}})
        self.rejected: dict[str, int] = {}  # requests refused by the server before the batching core
        self._last_success = (0, 0)  # (success count, ms since epoch) for the statistics extension
        self._compute = [0, 0.0, 0, 0.0]  # success, compute sum, batches at the last read; per-request total
        self.metadata = self._metadata()
        self.config = self._config()

    # -- documents ----------------------------------------------------------------------------------------
    def _metadata(self) -> dict[str, Any]:
        # each tensor's full shape, as the client sends it: -1 at its own batch axis (Triton's metadata form, the
        # config's dims with the batch dim put back); a stateful model's state tensors are not listed (implicit)
        def t(s):
            return {"name": s.name, "datatype": s.kserve_dtype, "shape": list(s.shape)}

        return {"name": self.name, "versions": [self.version], "platform": self.platform,
                "inputs": [t(s) for s in self.model.inputs], "outputs": [t(s) for s in self.model.outputs]}

    def _config(self) -> dict[str, Any]:
        """Triton's model configuration (JSON form), as perf_analyzer and tritonclient read it."""
        m = self.model
        # Triton's format implies the batch dim first in every tensor when max_batch_size > 0 (``dims`` leave it
        # out). A model that batches on another axis (a state [2, batch, 128]) or has a tensor shared by the batch
        # (a scalar sample rate) cannot be written that way: it is reported as Triton reports a model it does not
        # batch itself, max_batch_size 0 with every dim (-1 at the batch axis), which is also the shape clients
        # send. The core still batches it; ``parameters.batch_axes`` says along which axis each tensor stacks.
        tensors = [*m.inputs, *m.outputs]
        batched = m.max_batch_size > 0 and all(s.shape and s.batch_axis == 0 for s in tensors)

        def dims(s):
            return list(s.shape[1:] if batched else s.shape)

        params: dict[str, Any] = {}
        if m.max_batch_size > 0 and not batched:
            axes = ",".join(f"{s.name}:{'none' if s.batch_axis is None or not s.shape else s.batch_axis}"
                            for s in tensors)
            params["batch_axes"] = {"string_value": axes}
        pol = m.policy
        cfg: dict[str, Any] = {
            "name": self.name, "platform": self.platform, "backend": self.triton_backend,
            "version_policy": self.version_policy,
            "max_batch_size": m.max_batch_size if batched else 0,
            "input": [{"name": s.name, "data_type": _TRITON_TYPES.get(s.kserve_dtype, "TYPE_INVALID"),
                       "format": "FORMAT_NONE", "dims": dims(s), "is_shape_tensor": False,
                       "allow_ragged_batch": False, "optional": False} for s in m.inputs],
            "output": [{"name": s.name, "data_type": _TRITON_TYPES.get(s.kserve_dtype, "TYPE_INVALID"),
                        "dims": dims(s), "label_filename": "", "is_shape_tensor": False} for s in m.outputs],
            "batch_input": [], "batch_output": [],
            "instance_group": [{"name": f"{self.name}_0", "kind": "KIND_GPU" if self.device != "cpu"
                                else "KIND_CPU", "count": pol.device_concurrency, "gpus": [], "profile": [],
                                "passive": False, "host_policy": ""}],
            "default_model_filename": "", "parameters": params, "model_warmup": [],
        }
        if batched:
            cfg["dynamic_batching"] = {
                "preferred_batch_size": list(pol.preferred_batch_sizes),
                "max_queue_delay_microseconds": int(round(pol.max_batch_delay * 1e6)),
                "preserve_ordering": False, "priority_levels": 0, "default_priority_level": 0,
                "default_queue_policy": {"timeout_action": "REJECT", "allow_timeout_override": True,
                                         "max_queue_size": pol.max_queue_size,
                                         "default_timeout_microseconds": int(round((pol.timeout or 0) * 1e6))},
                "priority_queue_policy": {}}
        return cfg

    def statistics(self) -> dict[str, Any]:
        """Triton's statistics extension from the batching core's counters (cumulative, nanoseconds).

        Triton counts compute time per request; the core times batches, so compute_infer grows, between two
        reads, by (new successful requests) x (mean compute time of the batches run since the last read):
        cumulative and never decreasing, as clients that subtract two reads expect."""
        s = self.model.stats()
        req = s["requests"]
        success = req["success"]
        failed = sum(req["failed"].values()) + sum(req["rejected"].values()) + sum(self.rejected.values())
        comp = s["compute_s"]
        c = self._compute
        d_req, d_sum, d_n = success - c[0], comp["sum"] - c[1], comp["count"] - c[2]
        if d_req > 0 and d_n > 0:
            c[3] += d_req * (d_sum / d_n)
        if d_n > 0 or d_req > 0:
            c[0], c[1], c[2] = success, comp["sum"], comp["count"]
        last_n, last_ms = self._last_success
        if success != last_n:
            last_ms = int(time.time() * 1000)
            self._last_success = (success, last_ms)

        def d(count, seconds):
            return {"count": int(count), "ns": int(seconds * 1e9)}

        return {"name": self.name, "version": self.version, "last_inference": last_ms,
                "inference_count": s["samples"], "execution_count": s["batches"],
                "inference_stats": {"success": d(success, s["request_s"]["sum"]), "fail": d(failed, 0),
                                    "queue": d(s["queue_wait_s"]["count"], s["queue_wait_s"]["sum"]),
                                    "compute_input": d(success, 0), "compute_infer": d(success, c[3]),
                                    "compute_output": d(success, 0), "cache_hit": d(0, 0), "cache_miss": d(0, 0)},
                "response_stats": {}, "batch_stats": [], "memory_usage": [],
                # not in Triton's schema (gRPC clients drop it): which device served what
                "devices": _device_stats(self.model, s)}

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    @property
    def ready(self) -> bool:
        return bool(self.model.ready)


def fair_share(max_queue: int) -> int:
    """Requests one connection may have waiting once a model's queue is half full: 1/16 of it, at least 8."""
    return max(8, max_queue // 16)


class Service:
    """The models a server serves (every loaded version), its readiness and drain state, the shared request path,
    and the model-repository extension (index, load, unload: ``control``, a ``ModelControl``, does the work).

    ``versions[name][version]`` holds every served version; ``models[name]`` the highest one, which requests
    without a version go to. A reload swaps a name's versions in one step on the event loop (``install``);
    the versions it replaces are *retired*: they take no new request (one still holding a retired ``Served``
    is sent to its successor) and are closed once every request they accepted is answered."""

    def __init__(self, models: Mapping[str, Any] | list[Any], *, api_key: str | None = None,
                 load_seconds: Mapping[Any, float] | None = None, allow_nonfinite: bool | None = None,
                 reject_nonfinite: bool = False):
        items = list(models.values()) if isinstance(models, Mapping) else list(models)
        self.versions: dict[str, dict[str, Served]] = {}
        self.models: dict[str, Served] = {}
        seconds = load_seconds or {}
        for m in items:
            version = str(getattr(m, "version", "1"))
            if version in self.versions.get(m.name, {}):
                raise InvalidInput(f"two models are named {m.name!r} (version {version}); give one another name "
                                   "(NAME=PATH)")
            secs = seconds.get((m.name, version), seconds.get(m.name, 0.0))
            self.versions.setdefault(m.name, {})[version] = Served(m, secs)
        for name in self.versions:
            self.models[name] = _latest(self.versions[name])
            self._list_versions(name)
        self._key = api_key.encode() if api_key else None
        self.draining = False
        self.unready = False  # readiness false while still serving (the drain delay before intake stops)
        # NaN/Inf in float inputs are accepted (as Triton does; tabular models use NaN for "missing") unless
        # reject_nonfinite; allow_nonfinite is the old opt-in, now the default (kept so old callers still work)
        self.finite = bool(reject_nonfinite)
        self.started = time.time()
        self.control: Any = None  # the ModelControl of a repository-backed server (None: fixed models)
        self.generation = 0  # bumped whenever a model or version is added, swapped or removed
        self._retiring: set[Served] = set()

    def served_all(self) -> list[Served]:
        """Every served version of every model (what /metrics and the statistics extension report)."""
        return [s for vs in self.versions.values() for s in vs.values()]

    # -- model control -----------------------------------------------------------------------------------
    def install(self, name: str, new: Mapping[str, Served]) -> list[Served]:
        """Make ``new`` (version -> Served; empty = unload) the served versions of ``name`` in one step; returns
        the versions it replaced, retired (intake stopped). Call on the event loop; ``drain()`` them after."""
        old = self.versions.get(name, {})
        keep = {id(s) for s in new.values()}
        retired = [s for s in old.values() if id(s) not in keep]
        if new:
            self.versions[name] = dict(new)
            self.models[name] = _latest(self.versions[name])
            self._list_versions(name)
        else:
            self.versions.pop(name, None)
            self.models.pop(name, None)
        for s in retired:
            s.retired = True
            self._retiring.add(s)
            s.model.stop_intake()
        self.generation += 1
        return retired

    def _list_versions(self, name: str) -> None:
        """Model metadata lists every served version of the model (KServe v2 ``versions``)."""
        listed = sorted(self.versions[name], key=_version_key)
        for s in self.versions[name].values():
            s.metadata["versions"] = listed

    async def drain(self, retired: list[Served], timeout: float | None = None) -> bool:
        """Close retired versions once every request they accepted is answered (in a worker thread)."""
        loop = asyncio.get_running_loop()
        ok = True
        for s in retired:
            try:
                ok = await loop.run_in_executor(None, lambda m=s.model: m.close(drain=True, timeout=timeout)) and ok
            finally:
                self._retiring.discard(s)
            log.info("%-28s | version %s closed (%s)", f"model[{s.name}]", s.version,
                     "drained" if ok else "drain timeout")
        return ok

    def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Triton's repository index: every model (and version) with its state and, when not READY, why."""
        if self.control is not None:
            return self.control.index(ready_only)
        out = [{"name": s.name, "version": s.version, "state": "READY" if s.ready else "UNAVAILABLE",
                "reason": "" if s.ready else "no worker is running"} for s in self.served_all()]
        return [e for e in out if e["state"] == "READY"] if ready_only else out

    async def load_model(self, name: str, params: Mapping[str, Any] | None = None) -> None:
        """Load (or reload) ``name`` from the repository; returns once the new versions serve (atomic swap)."""
        self._control("load").check_mode("load")
        await self.control.load(name, params)

    async def unload_model(self, name: str, params: Mapping[str, Any] | None = None) -> None:
        """Stop serving ``name``; returns once every request its versions accepted is answered."""
        self._control("unload").check_mode("unload")
        await self.control.unload(name, params)

    def _control(self, what: str) -> Any:
        if self.draining:
            raise ServerClosing(f"the server is shutting down: model {what} refused")
        if self.control is None:
            raise ModelControlDisabled(f"model {what} is off: this server serves a fixed set of models",
                                       hint="start it with `xinfer-sdk serve REPOSITORY --model-control explicit`")
        return self.control

    # -- security ------------------------------------------------------------------------------------------
    @property
    def auth_required(self) -> bool:
        return self._key is not None

    def check_auth(self, authorization: bytes | str | None) -> None:
        if self._key is None:
            return
        if isinstance(authorization, str):
            authorization = authorization.encode("latin-1", "replace")
        if not authorization or not authorization.startswith(b"Bearer ") or not hmac.compare_digest(
                authorization[7:].strip(), self._key):
            raise Unauthorized("missing or wrong API key: send 'Authorization: Bearer <key>'")

    # -- lookup -------------------------------------------------------------------------------------------
    def get(self, name: str, version: str | None = None) -> Served:
        served = self.models.get(name)
        if served is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"unknown model {name!r}; this server serves: {known}")
        if version in (None, "", served.version):
            return served
        other = self.versions[name].get(str(version))
        if other is None:
            have = ", ".join(sorted(self.versions[name], key=_version_key))
            raise ModelNotFound(f"model {name!r} has no version {version!r} (versions: {have})")
        return other

    @property
    def ready(self) -> bool:
        return not self.draining and not self.unready and all(s.ready for s in self.served_all())

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return not self.draining and not self.unready and self.get(name, version).ready

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def statistics(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        if name:
            return {"model_stats": [self.get(name, version).statistics()]}
        return {"model_stats": [s.statistics() for s in self.served_all()]}

    # -- inference ----------------------------------------------------------------------------------------
    def submit(self, served: Served, inputs: Mapping[str, np.ndarray], timeout: float | None,
               loop: asyncio.AbstractEventLoop, held: int = 0,
               params: Mapping[str, Any] | None = None) -> tuple[asyncio.Future, Any]:
        """Validate and enqueue; returns (future of the outputs, the core's request handle for cancel()).
        Raises InvalidInput / QueueFull / ServerClosing at once.

        ``held``: requests the caller's connection already has waiting. Fairness between connections: once the
        model's queue is half full, a connection holding more than its share (``fair_share``) is refused
        (429 / RESOURCE_EXHAUSTED), so one pipelining client cannot fill the queue and lock the others out.
        ``params``: the request-level KServe v2 parameters (``sequence_id``, ``sequence_start``, ``sequence_end``
        for a stateful model's ``model.sequences``; other keys are ignored here)."""
        if served.retired:  # a reference taken before a reload / unload: its successor answers (or 404)
            served = self._successor(served)
        if held:
            self._check_share(served, held)
        seq = getattr(served.model, "sequences", None)
        if seq is not None:  # a stateful model: the sequence batcher adds each sequence's state and enqueues
            fut = loop.create_future()
            try:
                handle = seq.submit(inputs, params or {}, fut, loop, timeout, finite=self.finite)
            except InvalidInput:
                served.reject("InvalidInput")
                raise
            return fut, handle
        try:
            feeds, n, sig = served.model.validate(inputs, finite=self.finite)
        except InvalidInput:
            served.reject("InvalidInput")
            raise
        fut = loop.create_future()
        req = served.batcher.enqueue(feeds, n, sig, ASYNC, fut, loop, timeout)
        return fut, req

    def _successor(self, served: Served) -> Served:
        cur = self.models.get(served.name)
        if cur is None:
            raise ModelNotFound(f"model {served.name!r} has been unloaded; this server serves: "
                                f"{', '.join(sorted(self.models)) or 'none'}")
        return cur

    def _check_share(self, served: Served, held: int) -> None:
        batcher = served.batcher
        cap = batcher.max_queue
        if cap and held >= fair_share(cap) and batcher.stats.queue_depth * 2 >= cap:
            batcher.stats.record_rejected("queue_full")
            raise QueueFull(f"model '{served.name}': its queue is {batcher.stats.queue_depth} of {cap} requests and "
                            f"this connection already has {held} of them waiting (at most {fair_share(cap)} per "
                            "connection while the queue is half full)",
                            hint="wait for answers before sending more, or spread the load over more replicas")

    def begin_drain(self) -> None:
        """Readiness goes false first, then every model stops taking requests (accepted ones still finish)."""
        if self.draining:
            return
        self.draining = True
        if self.control is not None:
            self.control.stop()
        for s in self.served_all():
            s.model.stop_intake()

    def in_flight(self) -> int:
        total = 0
        for s in [*self.served_all(), *self._retiring]:
            total += s.batcher.in_flight
            seq = getattr(s.model, "sequences", None)
            if seq is not None:  # accepted, waiting behind their sequence's running request: not yet in the core
                total += seq.waiting
        return total

    def close(self, timeout: float | None = None) -> bool:
        ok = True
        for s in [*self.served_all(), *list(self._retiring)]:
            ok = s.model.close(drain=True, timeout=timeout) and ok
        from .shm import close_registry  # registered shared-memory regions are unmapped with the server
        close_registry(self)
        return ok


def _device_stats(model: Any, stats: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    from .metrics import device_stats

    return device_stats(model, stats)


def _version_key(v: str) -> tuple[int, str]:
    return (int(v), "") if v.isdigit() else (-1, v)


def _latest(versions: Mapping[str, Served]) -> Served:
    """The version requests without a version go to: the highest number."""
    return versions[max(versions, key=_version_key)]


class ModelControlDisabled(UserError):
    """A repository load / unload on a server whose model control does not allow it."""
