"""PNG charts for `plan --plot` and `tune` (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import require

if TYPE_CHECKING:  # pragma: no cover
    from .planner import Plan
    from .tune import TuneResult


def _pyplot():
    mpl = require("matplotlib", purpose="--plot (PNG charts)", extra="serve")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_plan(result: Plan, path: str) -> str:
    """Left: predicted batch latency per profile (log-log) with the p99 target; right: samples/s per batch."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for pp in result.plans:
        b = [bt.batch for bt in pp.table]
        label = f"{pp.profile.name} ({pp.precision}{', calibrated' if pp.device.calibrated else ''})"
        ax1.plot(b, [bt.seconds * 1e3 for bt in pp.table], marker="o", label=label)
        ax2.plot(b, [bt.batch / bt.seconds for bt in pp.table], marker="o", label=label)
        if pp.calibration:
            rows = pp.calibration["rows"]
            ax1.scatter([r["batch"] for r in rows], [r["measured_s"] * 1e3 for r in rows], marker="x", color="black",
                        zorder=5, label=f"{pp.profile.name} measured")
    ax1.axhline(result.p99 * 1e3, color="red", linestyle="--", linewidth=1, label=f"p99 target {result.p99 * 1e3:g} ms")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_yscale("log")
    ax1.set_ylabel("predicted latency of one batch (ms)")
    ax2.set_yscale("log")
    ax2.set_ylabel("samples/s (one worker)")
    ax1.legend(fontsize=7)
    title = f"xinfer-sdk plan: {result.model}"
    best, n = result.best.get("fewest_devices"), result.best.get("devices")
    if best:
        title += f" -> {n} x {best}" if n else f" -> {best}"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def plot_tune(result: TuneResult, path: str) -> str:
    """Throughput against p99 for every measured policy; the SLO as a vertical line; the choice circled."""
    plt = _pyplot()
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
