"""``xinfer-sdk profile``: a short closed-loop load, recorded stage by stage, written as a trace and a table.

In-process (a bundle): the batching core's stamps (``runtime.trace.RECORDER``) and, on ONNX Runtime, the
session's op-level profile, merged on ``time.perf_counter()``. Against a running server (``url``): the
client's latency per request and the server's own statistics (``/v2/models/<m>/stats``) read before and after
the load, so network + HTTP = client latency - the server's time from enqueue to answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from ..errors import UserError
from ..loadgen import TargetDown, closed_loop
from ..runtime import trace
from . import ort as ort_profile
from .analysis import RequestStages, Sent, build_trace, request_stages, summarise
from .recorder import BatchRecord, StageRecorder

log = logging.getLogger(__name__)

#: requests drawn in the trace (the table counts all of them); keeps the JSON small enough for a browser
TRACE_REQUESTS = 2000
_perf = time.perf_counter


def _write(path: str, doc: dict[str, Any]) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, separators=(",", ":"))
    except OSError as exc:
        raise UserError(f"cannot write the trace to {path}: {exc.strerror or exc}",
                        hint="pass --out with a writable path") from None
    return os.path.abspath(path)


def _load_profiled(bundle: str, *, profile: str, backend: str, profiles_dirs: Sequence[str], folder: str,
                   ort_ops: bool) -> Any:
    """The model as ``load()`` resolves it; on ONNX Runtime made again with profiling sessions."""
    from ..runtime.loader import load
    from ..runtime.model import Model

    model = load(bundle, profile=profile, backend=backend, profiles_dirs=profiles_dirs, warmup=False)
    if not ort_ops or model.describe()["backend"] != "onnxruntime" or getattr(model, "sequences", None) is not None:
        return model  # (a stateful model is refused by the caller)
    from ..runtime.backends.onnxruntime import OnnxRuntimeBackend

    info = model.describe()
    model.close()
    return Model(model.bundle, profile=model.profile, backend_cls=ort_profile.profiling_backend(OnnxRuntimeBackend,
                 folder), backend_reason=f"{info.get('why', '')} (sessions with profiling on)", skipped={},
                 device=model.device, devices=list(getattr(model, "devices", [model.device])), threads=model.threads,
                 policy=model.policy, name=model.name, warmup=True)


def profile_bundle(bundle: str, *, out: str = "profile.json", concurrency: int = 4, duration: float = 2.0,
                   batch: int = 1, profile: str = "auto", backend: str = "auto", profiles_dirs: Sequence[str] = (),
                   ort_ops: bool = True, top: int = 8, warmup: float = 0.2) -> dict[str, Any]:
    """Run ``concurrency`` callers for ``duration`` s against the bundle in-process; write the trace to ``out``."""
    from ..runtime.delivery import ASYNC
    from ..server.clients import sample_inputs

    with tempfile.TemporaryDirectory(prefix="xinfer-profile-") as folder:
        model = _load_profiled(bundle, profile=profile, backend=backend, profiles_dirs=profiles_dirs, folder=folder,
                               ort_ops=ort_ops)
        rec = StageRecorder()
        sent: list[Sent] = []
        cuda = None
        ort_events: list = []
        try:
            if getattr(model, "sequences", None) is not None:
                raise UserError(f"model '{model.name}' is stateful (sequence batching): `xinfer-sdk profile` drives "
                                "stateless models only", hint="profile it behind `xinfer-sdk serve` with --url")
            inputs = sample_inputs(model.inputs, batch)
            core = model.batcher
            backend_name = model.describe().get("backend")

            async def send() -> None:
                t_send = _perf()
                feeds, n, sig = model.validate(inputs)
                loop = asyncio.get_running_loop()
                fut = loop.create_future()
                req = core.enqueue(feeds, n, sig, ASYNC, fut, loop, None)
                ok = False
                try:
                    await fut
                    ok = True
                finally:
                    sent.append(Sent(t_send, _perf(), req.t_enq, ok))

            one_gpu = len(getattr(model, "devices", [model.device])) == 1
            timers = _cuda_timers(core.backends) if backend_name == "tensorrt" and one_gpu else []
            previous = trace.set_recorder(rec)
            t_measure = _perf() + warmup  # what the load generator counts; the warm-up is left out here too
            try:
                load = closed_loop(send, concurrency=concurrency, duration=duration, warmup=warmup)
            finally:
                trace.set_recorder(previous)
                cuda = _cuda_overlap(core.backends, timers)
                if ort_ops:
                    ort_events = ort_profile.collect(list(core.backends))
        finally:
            model.close()
    sent = [s for s in sent if s.t_send >= t_measure]
    mine = [b for b in rec.batches if b.model == model.name and b.stamps.get("take", 0.0) >= t_measure]
    index = _index(mine)
    stages = [request_stages(s, index.get(s.t_enq, [])) for s in sent if s.ok]
    notes = []
    if not mine:
        notes.append("the batching core recorded no batches (this build's batcher has no trace.RECORDER hook): "
                     "only validate + core time per request")
    ort_events = [e for e in ort_events if e.start >= t_measure]
    if ort_ops and not ort_events and backend_name == "onnxruntime":
        notes.append("ONNX Runtime wrote no op-level profile")
    summary = summarise(stages, mine, ort_events, top=top)
    if cuda is not None:
        summary["cuda"] = cuda
    shown, batches_shown, ort_shown = _window(stages, mine, ort_events, TRACE_REQUESTS)
    meta = {"target": model.name, "transport": "in-process", "concurrency": concurrency, "batch": batch,
            "backend": backend_name, "device": model.device}
    path = _write(out, build_trace(shown, batches_shown, ort_shown, meta=meta))
    return {"target": model.name, "transport": "in-process", "trace": path, "load": load.to_dict(),
            "summary": summary, "notes": notes, "policy": model.policy.to_dict(), "device": model.device,
            "backend": backend_name}


def _cuda_timers(backends: list[Any]) -> list[Any]:
    """CUDA-event timers on each TensorRT worker (NOT RUN HERE: written against cuda-python, see cuda_events)."""
    from ..accel.nvidia import _cudart
    from .cuda_events import Clock, StageEvents

    try:
        clock = Clock(_cudart.load())
        timers = [StageEvents(clock, i) for i in range(len(backends))]
    except Exception as exc:  # no CUDA here after all: the profile goes on without device timing
        log.warning("CUDA-event timing unavailable: %s", exc)
        return []
    for backend, timer in zip(backends, timers):
        if backend is not None:  # the engine's own object, under the batching core's per-device wrapper
            getattr(backend, "inner", backend)._cuda_timer = timer
    return timers


def _cuda_overlap(backends: list[Any], timers: list[Any]) -> dict[str, Any] | None:
    if not timers:
        return None
    from .cuda_events import overlap

    for backend in backends:
        if backend is not None:
            getattr(backend, "inner", backend)._cuda_timer = None
    result = overlap([iv for t in timers for iv in t.intervals])
    for t in timers:
        t.destroy()
    return result


def _index(batches: list[BatchRecord]) -> dict[float, list[BatchRecord]]:
    """Batches per request, keyed by the request's enqueue stamp (a split request runs in several)."""
    index: dict[float, list[BatchRecord]] = {}
    for b in batches:
        for t_enq, _, _ in b.requests:
            index.setdefault(t_enq, []).append(b)
    return index


def _window(stages: list[RequestStages], batches, ort_events, limit: int):
    """The first ``limit`` requests and the batches / ORT events of their time window."""
    stages = sorted(stages, key=lambda r: r.t_send)[:limit]
    if not stages:
        return stages, list(batches), list(ort_events)
    lo, hi = stages[0].t_send, max(r.t_recv for r in stages)
    return (stages, [b for b in batches if lo <= b.stamps.get("take", lo) <= hi],
            [e for e in ort_events if lo <= e.start <= hi])


# ---------------------------------------------------------------------------------------------------------
# a running server
def _stats(base: str, model: str, api_key: str | None) -> dict[str, Any]:
    req = urllib.request.Request(f"{base}/v2/models/{model}/stats")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            doc = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raise UserError(f"{base}: statistics of model {model!r}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"cannot reach {base} ({getattr(exc, 'reason', exc)})",
                        hint="is `xinfer-sdk serve` running there?") from None
    stats = (doc.get("model_stats") or [{}])[0].get("inference_stats", {})
    return {k: (int(v.get("count", 0)), int(v.get("ns", 0))) for k, v in stats.items()}


def profile_url(url: str, model: str, *, out: str = "profile.json", concurrency: int = 4, duration: float = 2.0,
                batch: int = 1, api_key: str | None = None, warmup: float = 0.2) -> dict[str, Any]:
    """Load a running server over HTTP; split the client's latency into the server's share and the rest."""
    from ..server.bench import _http_metadata
    from ..server.clients import HttpTransport, sample_inputs

    base = (url if "://" in url else f"http://{url}").rstrip("/")
    inputs = sample_inputs(_http_metadata(base, model, api_key), batch)
    before = _stats(base, model, api_key)
    transport = HttpTransport(base, model, inputs, api_key=api_key)
    sent: list[Sent] = []

    async def send() -> None:
        t_send = _perf()
        status = await transport.send()
        sent.append(Sent(t_send, _perf(), None, status == "ok"))
        if status == "connection":
            raise ConnectionError(f"{base}: connection failed")
        if status != "ok":
            raise RuntimeError(f"HTTP {status}")

    async def run() -> Any:
        try:
            from ..loadgen import closed_loop_async

            return await closed_loop_async(send, concurrency=concurrency, duration=duration, warmup=warmup)
        finally:
            await transport.close()

    try:
        load = asyncio.run(run())
    except TargetDown as exc:
        raise UserError(f"the server at {base} stopped answering ({exc})",
                        hint="is `xinfer-sdk serve` still running there?") from None
    after = _stats(base, model, api_key)
    ok = [s for s in sent if s.ok]
    client = sum(s.t_recv - s.t_send for s in ok) / len(ok) if ok else None
    d = {k: (after[k][0] - before.get(k, (0, 0))[0], after[k][1] - before.get(k, (0, 0))[1]) for k in after}

    def mean_ms(key: str) -> float | None:
        count, ns = d.get(key, (0, 0))
        return ns / count / 1e6 if count > 0 else None

    server = mean_ms("success")
    summary: dict[str, Any] = {"requests": len(ok), "latency_ms": client * 1e3 if client is not None else None,
                               "server_ms": server, "queue_ms": mean_ms("queue"), "compute_ms": mean_ms("compute_infer")}
    if client is not None and server is not None:
        net = client * 1e3 - server
        summary["network_http_ms"] = net
        summary["network_http_share"] = net / (client * 1e3) if client > 0 else None
    stages = [RequestStages(s.t_send, s.t_recv, []) for s in ok]
    shown = sorted(stages, key=lambda r: r.t_send)[:TRACE_REQUESTS]
    path = _write(out, build_trace(shown, [], [], meta={"target": f"{model} @ {base}", "transport": "http"}))
    return {"target": f"{model} @ {base}", "transport": "http", "trace": path, "load": load.to_dict(),
            "summary": summary, "notes": ["the server's share is its statistics' mean time from enqueue to answer; "
                                          "network + HTTP is the client's mean latency minus it (decode, encode, "
                                          "transport, the client's own event loop)"]}


__all__ = ["profile_bundle", "profile_url"]
