"""PNG charts for `plan --plot` (matplotlib, Agg backend: no display needed). ``tune`` draws its own sweep with
``pyplot()`` from here; this module knows nothing of ``tune`` (one import direction)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .._lazy import require
from .bill import cost_vs_p99

if TYPE_CHECKING:  # pragma: no cover
    from .result import Plan


def pyplot():
    """matplotlib.pyplot on the Agg backend; a missing matplotlib is a MissingDependency naming the package."""
    mpl = require("matplotlib", purpose="--plot (PNG charts)", extra="serve")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_plan(result: Plan, path: str, *, cost: dict | None = None) -> str:
    """Left: predicted batch latency per profile (log-log) with the p99 target; middle: samples/s per batch;
    right (when a planned profile has a price): cost against the p99 target (``bill.cost_vs_p99``; pass
    ``cost`` to reuse curves already computed). One colour per profile in every panel, one legend below."""
    plt = pyplot()
    if cost is None:
        cost = cost_vs_p99(result)
    cost = {k: v for k, v in cost.items() if v}
    n = len(result.plans)
    ncol = min(n, 6)
    rows = math.ceil((n + 1) / ncol)
    fig, axes = plt.subplots(1, 3 if cost else 2, figsize=(18 if cost else 12, 4.8 + 0.22 * rows), squeeze=False)
    ax1, ax2 = axes[0][0], axes[0][1]
    cmap = plt.get_cmap("tab20")
    style = {pp.profile.name: {"color": cmap(k % 20), "linestyle": ("-", "--", ":")[k // 20 % 3]}
             for k, pp in enumerate(result.plans)}
    for pp in result.plans:
        b = [bt.batch for bt in pp.table]
        label = f"{pp.profile.name} ({pp.precision}{', calibrated' if pp.device.calibrated else ''})"
        ax1.plot(b, [bt.seconds * 1e3 for bt in pp.table], marker="o", markersize=3, label=label, **style[pp.profile.name])
        ax2.plot(b, [bt.batch / bt.seconds for bt in pp.table], marker="o", markersize=3, **style[pp.profile.name])
        if pp.calibration:
            cal = pp.calibration["rows"]
            ax1.scatter([r["batch"] for r in cal], [r["measured_s"] * 1e3 for r in cal], marker="x", color="black",
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
    if cost:
        _cost_panel(axes[0][2], result, cost, style)
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    title = f"xinfer-sdk plan: {result.model}"
    best, n_best = result.best.get("fewest_devices"), result.best.get("devices")
    if best:
        title += f" -> {n_best} x {best}" if n_best else f" -> {best}"
    cheapest = result.bill.cheapest
    if cheapest is not None:
        title += f"; cheapest {cheapest.profile}"
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.22 * rows / (4.8 + 0.22 * rows) + 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _cost_panel(ax, result: Plan, cost: dict, style: dict) -> None:
    """$/h of the whole fleet for the target rate (or $ per 1M inferences at one device's capacity) against
    the p99 target; the planned target as a vertical line; GPUs needed annotated."""
    per_hour = result.target_qps is not None
    ticks: set[float] = set()
    for name, points in cost.items():
        xs = [pt.p99_s * 1e3 for pt in points]
        ys = [pt.usd_per_hour if per_hour else pt.usd_per_million for pt in points]
        ticks.update(xs)
        ax.plot(xs, ys, marker="o", markersize=3, drawstyle="steps-post" if per_hour else "default", **style[name])
        if per_hour:
            for x, y, pt in zip(xs, ys, points):
                ax.annotate(str(pt.devices), (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.axvline(result.p99 * 1e3, color="red", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(ticks))
    ax.set_xticklabels([f"{x:g}" for x in sorted(ticks)])
    ax.minorticks_off()
    ax.set_xlabel("p99 latency target (ms)")
    ax.set_ylabel(f"USD per hour for {result.target_qps:g} req/s (GPUs annotated)" if per_hour
                  else "USD per 1M inferences (one device at capacity)")
    ax.grid(True, which="both", alpha=0.3)
