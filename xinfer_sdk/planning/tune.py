"""`xinfer-sdk tune BUNDLE --p99 20ms`: sweep the batch policy on the hardware at hand with the load
generator, keep the highest throughput within the SLO, write it into the bundle (or a config.yaml).

Each point of the sweep loads the model with one policy (``max_batch_size`` x ``max_batch_delay`` x
``device_concurrency``) and drives it with a closed loop of ``max_batch_size x device_concurrency``
callers (enough to fill every worker's batch); when the p99 misses the target, the number of callers is
halved and the point measured again (up to three times), so each policy is credited with the most
throughput it delivers within the SLO. The default sweep has 10 points of 3 s: about a minute.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..bundle import is_bundle, open_bundle, save_manifest
from ..errors import UserError
from ..policy import BatchPolicy
from ..profiles import Profile, read_host
from .planner import parse_p99

log = logging.getLogger(__name__)

DEFAULT_BATCHES = (1, 8, 32)
DEFAULT_DELAYS = (0.0, 0.002)
RETRIES = 3


@dataclasses.dataclass
class TunePoint:
    policy: BatchPolicy
    clients: int
    throughput: float
    p50: float | None
    p99: float | None
    errors: dict[str, int]
    meets_slo: bool
    mean_batch: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.to_dict(), "clients": self.clients, "throughput": self.throughput,
                "p50_s": self.p50, "p99_s": self.p99, "errors": self.errors, "meets_slo": self.meets_slo,
                "mean_batch": self.mean_batch}


@dataclasses.dataclass
class TuneResult:
    model: str
    profile: str
    p99: float
    points: list[TunePoint]
    best: TunePoint | None
    written: str | None
    plot: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "profile": self.profile, "p99_s": self.p99,
                "points": [p.to_dict() for p in self.points], "best": self.best.to_dict() if self.best else None,
                "written": self.written, "plot": self.plot}


def grid(*, batches: Sequence[int] = DEFAULT_BATCHES, delays: Sequence[float] = DEFAULT_DELAYS,
         workers: Sequence[int] | None = None, base: BatchPolicy | None = None, batched: bool = True
         ) -> list[BatchPolicy]:
    base = base or BatchPolicy()
    if workers is None:
        workers = (1, 2) if read_host().usable_cpus >= 2 else (1,)
    out = []
    for b in (batches if batched else (1,)):
        for d in delays:
            if b == 1 and d > 0:
                continue  # a delay cannot fill a batch of one
            for w in workers:
                out.append(base.replace(max_batch_size=int(b), max_batch_delay=float(d), device_concurrency=int(w),
                                        preferred_batch_sizes=()))
    return out


def _inputs(model) -> dict[str, Any]:
    import numpy as np

    from .calibrate import _feeds

    return _feeds(model.inputs, 1, {}, model.max_batch_size > 0, np.random.default_rng(0))


def measure_point(path: Any, policy: BatchPolicy, *, profile: Profile | str | None, p99: float, duration: float,
                  warmup: float = 0.5) -> TunePoint:
    from ..loadgen import closed_loop, model_sender
    from ..runtime.loader import load

    clients = max(1, policy.max_batch_size * policy.device_concurrency)
    if policy.max_batch_size == 1:
        clients = 2 * policy.device_concurrency
    with load(path, profile=profile or "auto", batching=policy) as model:
        send = model_sender(model, _inputs(model))
        last = None
        for _ in range(RETRIES + 1):
            before = model.stats()
            res = closed_loop(send, concurrency=clients, duration=duration, warmup=warmup)
            after = model.stats()
            ok = res.p99 is not None and res.p99 <= p99 and not res.errors
            last = TunePoint(policy, clients, res.throughput, res.p50, res.p99, res.errors, ok,
                             _mean_batch(before, after))
            if ok or clients == 1:
                break
            clients = max(1, clients // 2)
    return last


def _mean_batch(before: dict, after: dict) -> float | None:
    try:
        batches = after["batches"] - before["batches"]
        samples = after["samples"] - before["samples"]
    except (KeyError, TypeError):
        return None
    return samples / batches if batches else None


def tune(path: str | os.PathLike[str], *, p99: str | float, profile: Profile | str | None = None,
         duration: float = 3.0, policies: Sequence[BatchPolicy] | None = None, output: str | None = None,
         write: bool = True, plot: str | None = None,
         progress: Callable[[int, int, str], None] | None = None) -> TuneResult:
    """Sweep ``policies`` (default: ``grid()``) on this machine; write the best into the bundle or ``output``."""
    target = parse_p99(p99)
    p = Path(os.fspath(path))
    bundle = open_bundle(p) if is_bundle(p) else None
    if bundle is None and not (p.is_file() and p.suffix.lower() == ".onnx"):
        raise UserError(f"no bundle or .onnx model at {str(p)!r}", hint="pass a bundle folder from `xinfer-sdk build`")
    if write and bundle is None and output is None:
        raise UserError(f"{p.name} is not a bundle: tune writes its result into a bundle, or into a config.yaml",
                        hint="add -o config.yaml, or --no-write")
    if duration <= 0:
        raise UserError(f"--duration must be positive, got {duration!r}")
    if not isinstance(profile, Profile):
        from ..runtime.loader import resolve_profile

        profile = resolve_profile(profile)  # "auto"/None: this machine's profile
    base = None
    if bundle is not None and bundle.manifest.batch:
        base = BatchPolicy.from_dict(bundle.manifest.batch, source="bundle batch")
    batched = bundle.manifest.max_batch_size > 0 if bundle is not None else True
    points_policies = list(policies) if policies is not None else grid(base=base, batched=batched)
    points: list[TunePoint] = []
    for k, pol in enumerate(points_policies):
        if progress:
            progress(k, len(points_policies), f"batch<={pol.max_batch_size} delay={pol.max_batch_delay * 1e3:g}ms "
                                              f"workers={pol.device_concurrency}")
        points.append(measure_point(p, pol, profile=profile, p99=target, duration=duration))
    if progress:
        progress(len(points_policies), len(points_policies), "done")
    ok = [pt for pt in points if pt.meets_slo]
    best = max(ok, key=lambda pt: (pt.throughput, -pt.policy.max_batch_size)) if ok else None
    written = None
    if best is not None and write:
        written = write_policy(best.policy, bundle=bundle, output=output)
    result = TuneResult(model=str(p), profile=profile.name, p99=target, points=points, best=best, written=written,
                        plot=None)
    if plot:
        result.plot = plot_tune(result, plot)
    return result


def plot_tune(result: TuneResult, path: str) -> str:
    """Throughput against p99 for every measured policy; the SLO as a vertical line; the choice circled."""
    from .plot import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for pt in result.points:
        if pt.p99 is None:
            continue
        pol = pt.policy
        color = "tab:green" if pt.meets_slo else "tab:gray"
        ax.scatter(pt.p99 * 1e3, pt.throughput, color=color, s=30)
        ax.annotate(f"b{pol.max_batch_size} d{pol.max_batch_delay * 1e3:g} w{pol.device_concurrency} c{pt.clients}",
                    (pt.p99 * 1e3, pt.throughput), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if result.best is not None and result.best.p99 is not None:
        ax.scatter(result.best.p99 * 1e3, result.best.throughput, s=200, facecolors="none", edgecolors="red",
                   label="chosen")
    ax.axvline(result.p99 * 1e3, color="red", linestyle="--", linewidth=1, label=f"p99 target {result.p99 * 1e3:g} ms")
    ax.set_xscale("log")
    ax.set_xlabel("measured p99 latency (ms)")
    ax.set_ylabel("throughput (requests/s)")
    ax.set_title(f"xinfer-sdk tune: {result.model} on {result.profile}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def write_policy(policy: BatchPolicy, *, bundle=None, output: str | None = None) -> str:
    """Into ``output`` (a config.yaml with a ``batch:`` section) or the bundle's manifest (checksums stay valid:
    the manifest is not one of the checksummed artifacts)."""
    if output:
        out = Path(output)
        doc = {"batch": policy.to_dict()}
        text = "# written by `xinfer-sdk tune`: load it with xs.load(..., config=PATH)\n" + yaml.safe_dump(
            doc, sort_keys=False)
        out.write_text(text, encoding="utf-8")
        return str(out)
    bundle.manifest.batch = policy.to_dict()
    save_manifest(bundle.root, bundle.manifest)
    open_bundle(bundle.root)  # re-verify: the checksums of every artifact still hold
    return str(bundle.root / "xinfer.yaml")
