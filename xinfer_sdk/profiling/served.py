"""``xinfer-sdk profile BUNDLE --via http|grpc``: the bundle behind a real server in this process, loaded over the
network stack, so one run shows the batching core's stages *and* what HTTP/gRPC adds around them.

The server runs on free loopback ports in a background thread; the load generator drives it through the same
clients as ``bench --url``. Everything shares ``perf_counter``: the trace draws the clients' requests, the
core's requests (enqueue -> scatter, with queue / assemble / compute / scatter), the batches and ONNX Runtime's
kernels on one timeline. Client and core requests are not paired one to one (the wire carries no profiling id),
so the table is per-request means: protocol = client latency - the core's enqueue-to-scatter time (socket,
HTTP/2 or HTTP/1.1 framing, tensor decode and encode, both event loops).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ..errors import UserError
from ..loadgen import TargetDown, closed_loop_async
from ..runtime import trace
from . import ort as ort_profile
from .analysis import RequestStages, Sent, aligned_share, build_trace, ops_by_type
from .recorder import BatchRecord, StageRecorder
from .run import TRACE_REQUESTS, _load_profiled, _perf, _write

PID_CORE = 4
CORE_STAGES = (("queue", None, "take"), ("assemble", "take", "assembled"), ("compute", "assembled", "computed"),
               ("scatter", "computed", "scattered"))


def core_requests(batches: Sequence[BatchRecord]) -> list[RequestStages]:
    """Each request the core ran, enqueue to scatter, cut at its batch's stamps."""
    out = []
    for b in batches:
        s = b.stamps
        for t_enq, _, _ in b.requests:
            cuts = [(name, t_enq if k0 is None else s[k0], s[k1]) for name, k0, k1 in CORE_STAGES]
            out.append(RequestStages(t_enq, s["scattered"], cuts))
    return out


def summarise_served(sent: Sequence[Sent], batches: Sequence[BatchRecord], ort: Sequence[Any], *, top: int = 8
                     ) -> dict[str, Any]:
    ok = [s for s in sent if s.ok]
    core = core_requests(batches)
    out: dict[str, Any] = {"requests": len(ok), "core_requests": len(core), "batches": len(batches)}
    if not ok:
        return out
    client = sum(s.t_recv - s.t_send for s in ok) / len(ok)
    out["latency_ms"] = client * 1e3
    stages = []
    if core:
        per = {name: sum(b - a for n, a, b in (st for r in core for st in r.stages) if n == name) / len(core)
               for name, _, _ in CORE_STAGES}
        inside = sum(per.values())
        stages.append({"stage": "protocol (network, HTTP/gRPC, decode, encode)", "ms": (client - inside) * 1e3,
                       "share": (client - inside) / client if client > 0 else 0.0})
        stages += [{"stage": k, "ms": v * 1e3, "share": v / client if client > 0 else 0.0} for k, v in per.items()]
        out["mean_batch"] = sum(b.size for b in batches) / len(batches)
    out["stages"] = stages
    kernels = [e for e in ort if e.name != ort_profile.RUN_EVENT]
    total = sum(e.dur for e in kernels)
    if total > 0:
        ops = ops_by_type(kernels)
        out["copies_share_of_compute"] = sum(t for op, t, _ in ops if op.startswith("Memcpy")) / total
        out["ops"] = [{"op": op, "ms_total": t * 1e3, "kernels": c, "share": t / total} for op, t, c in ops[:top]]
        out["ort_aligned"] = aligned_share(ort, batches)
    return out


def profile_served(bundle: str, *, via: str = "http", out: str = "profile.json", concurrency: int = 4,
                   duration: float = 2.0, batch: int = 1, profile: str = "auto", backend: str = "auto",
                   profiles_dirs: Sequence[str] = (), ort_ops: bool = True, top: int = 8, warmup: float = 0.2
                   ) -> dict[str, Any]:
    import tempfile

    from ..server.clients import GrpcTransport, HttpTransport, sample_inputs
    from ..server.runner import Server

    if via not in ("http", "grpc"):
        raise UserError(f"--via {via!r}: expected http or grpc")
    with tempfile.TemporaryDirectory(prefix="xinfer-profile-") as folder:
        model = _load_profiled(bundle, profile=profile, backend=backend, profiles_dirs=profiles_dirs, folder=folder,
                               ort_ops=ort_ops)
        try:
            if getattr(model, "sequences", None) is not None:
                raise UserError(f"model '{model.name}' is stateful (sequence batching): `xinfer-sdk profile` drives "
                                "stateless models only")
            srv = Server([model], port=0, grpc_port=0 if via == "grpc" else None, gpu_metrics=False,
                         drain_timeout=5).start_background()
        except BaseException:
            model.close()
            raise
        rec = StageRecorder()
        sent: list[Sent] = []
        ort_events: list = []
        backend_name = model.describe().get("backend")
        try:
            inputs = sample_inputs(model.inputs, batch)
            if via == "grpc":
                transport: Any = GrpcTransport(f"127.0.0.1:{srv.grpc_port}", model.name, inputs)
            else:
                transport = HttpTransport(f"http://127.0.0.1:{srv.port}", model.name, inputs)

            async def send() -> None:
                t_send = _perf()
                status = await transport.send()
                sent.append(Sent(t_send, _perf(), None, status == "ok"))
                if status != "ok":
                    raise RuntimeError(f"{via} answered {status}")

            async def run() -> Any:
                try:
                    return await closed_loop_async(send, concurrency=concurrency, duration=duration, warmup=warmup)
                finally:
                    await transport.close()

            previous = trace.set_recorder(rec)
            t_measure = _perf() + warmup
            try:
                load = asyncio.run(run())
            except TargetDown as exc:
                raise UserError(f"the in-process server stopped answering ({exc})") from None
            finally:
                trace.set_recorder(previous)
                if ort_ops:
                    ort_events = ort_profile.collect(list(model.batcher.backends))
        finally:
            srv.stop()
            model.close()
    sent = [s for s in sent if s.t_send >= t_measure]
    batches = [b for b in rec.batches if b.model == model.name and b.stamps.get("take", 0.0) >= t_measure]
    ort_events = [e for e in ort_events if e.start >= t_measure]
    summary = summarise_served(sent, batches, ort_events, top=top)
    clients = sorted((RequestStages(s.t_send, s.t_recv, []) for s in sent if s.ok), key=lambda r: r.t_send)
    clients = clients[:TRACE_REQUESTS]
    notes = [] if batches else ["the batching core recorded no batches (no trace.RECORDER hook in this build)"]
    if clients:
        lo, hi = clients[0].t_send, clients[-1].t_recv
        batches_shown = [b for b in batches if lo <= b.stamps["take"] <= hi]
        ort_shown = [e for e in ort_events if lo <= e.start <= hi]
    else:
        batches_shown, ort_shown = batches, ort_events
    doc = build_trace(clients, batches_shown, ort_shown, meta={"target": model.name, "transport": via,
                                                                 "concurrency": concurrency, "batch": batch})
    doc["traceEvents"] += _core_track(core_requests(batches_shown), doc["otherData"]["t0"])
    path = _write(out, doc)
    return {"target": model.name, "transport": f"{via} (in-process server)", "trace": path, "load": load.to_dict(),
            "summary": summary, "notes": notes, "policy": model.policy.to_dict(), "device": model.device,
            "backend": backend_name}


def _core_track(core: list[RequestStages], t0: float) -> list[dict[str, Any]]:
    """The core's requests as their own process of lanes, on the trace's clock."""
    from .analysis import _lanes

    def us(t: float) -> float:
        return round((t - t0) * 1e6, 3)

    ev: list[dict[str, Any]] = [{"name": "process_name", "ph": "M", "pid": PID_CORE, "tid": 0,
                                 "args": {"name": "xinfer core requests"}}]
    for r, lane in zip(core, _lanes((r.t_send, r.t_recv) for r in core)):
        ev.append({"name": "core request", "cat": "core", "ph": "X", "pid": PID_CORE, "tid": lane,
                   "ts": us(r.t_send), "dur": round(us(r.t_recv) - us(r.t_send), 3)})
        ev += [{"name": n, "cat": "stage", "ph": "X", "pid": PID_CORE, "tid": lane, "ts": us(a),
                "dur": round(us(b) - us(a), 3)} for n, a, b in r.stages]
    return ev


__all__ = ["core_requests", "profile_served", "summarise_served"]
