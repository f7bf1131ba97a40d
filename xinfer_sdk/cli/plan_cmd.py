"""`xinfer-sdk plan` (capacity planning before you own the hardware) and `xinfer-sdk tune` (policy sweep on
the hardware at hand). The logic lives in ``xinfer_sdk.planning``; this module parses and prints."""

from __future__ import annotations

import click
from rich.markup import escape

from ..errors import UserError
from ._common import emit_json, err, json_option, out, progress, table


def _ms(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.3g}" if s >= 1e-4 else f"{s * 1e3:.2g}"


def _gb(b: float | None) -> str:
    return "-" if b is None else f"{b / 1e9:.3g}"


def _policy_text(p) -> str:
    if p is None:
        return "-"
    pref = "/".join(map(str, p.preferred_batch_sizes))
    return (f"batch {p.max_batch_size}, delay {p.max_batch_delay * 1e3:g} ms, {p.device_concurrency} worker"
            f"{'s' if p.device_concurrency > 1 else ''}" + (f", preferred {pref}" if pref else ""))


@click.command()
@click.argument("model", type=click.Path())
@click.option("-p", "--profile", "profiles", default="auto", show_default=True, metavar="NAMES",
              help="Hardware profile(s), comma-separated (e.g. t4,a10,l4,a100-sxm4-80gb); auto: this machine's; "
                   "all: every GPU and Jetson profile (name cpu too to add it).")
@click.option("--precision", default="auto", show_default=True,
              help="fp32 | fp16 | bf16 | int8 | fp8 | auto (the graph's, else each profile's default).")
@click.option("--target-qps", type=float, default=None, help="Traffic to serve, requests/s: gives replicas per profile.")
@click.option("--p99", default="50ms", show_default=True, help="Latency target at the 99th percentile, e.g. 20ms.")
@click.option("--shapes", multiple=True, metavar="NAME:MIN..OPT..MAX",
              help="Shape ranges of dynamic axes (latency uses OPT, memory uses MAX), e.g. ids:1x16..1x128..1x512.")
@click.option("--measure", is_flag=True, help="Run the model here through the runtime, fit this device, show "
                                              "predicted vs measured per batch size.")
@click.option("--measure-seconds", type=float, default=None, metavar="SECONDS",
              help="With --measure: measured time per batch size, all rounds together (default 0.3; about 10 x this "
                   "in all). Smaller is faster and noisier.")
@click.option("--measure-batches", default=None, metavar="SIZES",
              help="With --measure: batch sizes to measure, e.g. 1,8,32 (default 1,2,3,4,6,8,12,16,24,32; 1, 4, 16 "
                   "and 32 among them are fitted, the others held out).")
@click.option("--explain", is_flag=True, help="Print every figure with its derivation.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG chart: latency and throughput per batch, and cost against the p99 target.")
@click.option("--price", "prices", multiple=True, metavar="PROFILE=USD",
              help="USD per GPU-hour, e.g. --price l4=0.70 (repeatable or comma-separated); overrides the "
                   "profile's sourced price.")
@json_option
@click.pass_context
def plan(ctx: click.Context, model: str, profiles: str, precision: str, target_qps: float | None, p99: str,
         shapes: tuple[str, ...], measure: bool, measure_seconds: float | None, measure_batches: str | None,
         explain: bool, plot_path: str | None, prices: tuple[str, ...], as_json: bool) -> None:
    """How many devices of which profile serve MODEL (ONNX file or bundle) at the SLO, with which batch policy."""
    from ..planning import plan as run_plan
    from ..planning.calibrate import measure_options
    from ..planning.pricing import parse_prices
    from ..shapes import parse_shapes

    if (measure_seconds is not None or measure_batches is not None) and not measure:
        given = "--measure-seconds" if measure_seconds is not None else "--measure-batches"
        raise UserError(f"{given} shapes the measurement of --measure, which was not given",
                        hint=f"add --measure, or drop {given}")
    measure_kw = measure_options(measure_seconds, _sizes(measure_batches) if measure_batches is not None else None)
    if plot_path:  # a missing matplotlib fails now, not after the planning
        from ..planning.plot import pyplot

        pyplot()
    result = run_plan(model, profiles=profiles, precision=None if precision == "auto" else precision,
                      target_qps=target_qps, p99=p99, shapes=parse_shapes(shapes) or None, measure=measure,
                      profiles_dirs=ctx.obj.get("profiles_dirs", ()), prices=parse_prices(prices),
                      measure_kw=measure_kw, progress=progress(not as_json))
    if plot_path:
        from ..planning.plot import plot_plan

        plot_plan(result, plot_path)
    if as_json:
        data = result.to_dict()
        if plot_path:
            data["plot"] = plot_path
        emit_json(data)
        return
    _print_plan(result, explain=explain)
    if plot_path:
        err.print(f"chart written to {plot_path}", markup=False)


def _sizes(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--measure-batches: expected comma-separated batch sizes, got {text!r}",
                        hint="e.g. --measure-batches 1,8,32") from None


def _print_plan(result, *, explain: bool) -> None:
    first = result.plans[0].curve
    s = first.summary()
    shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in s["input_shapes"].items())
    out.print(f"[bold]{result.model}[/bold]: {s['flops_per_sample'] / 1e9:.4g} GFLOP/sample, "
              f"{s['param_count']:,} parameters ({s['param_bytes_stored'] / 1e6:.4g} MB as stored, "
              f"{first.graph_precision}), activations {s['activation_bytes_per_sample'] / 1e6:.3g} MB/sample, "
              f"{s['ops']} ops; shapes {shapes}")
    slo = f"p99 <= {result.p99 * 1e3:g} ms" + (f" at {_rate(result.target_qps)} req/s" if result.target_qps else "")
    out.print(f"SLO: {slo}")
    for warning in result.warnings:
        out.print(f"[bold yellow]WARNING[/bold yellow]: {escape(warning)}")
    for note in result.notes:
        out.print(f"note: {note}", markup=False)
    for pp in result.plans:
        dev, mem, ch = pp.device, pp.memory, pp.choice
        tag = "calibrated here" if dev.calibrated else ("estimated for this host" if dev.kind == "cpu" else (
            "fitted to published results (planning/gpu_factors.yaml)" if dev.factors_basis.startswith("fitted")
            else "roofline priors, not fitted"))
        rows = []
        for bt in pp.table:
            rows.append((bt.batch, _ms(bt.seconds), _rate(bt.batch / bt.seconds), bt.bound,
                         _gb(mem.need(bt.batch)), "yes" if bt.batch <= mem.max_batch else "NO"))
        out.print()
        out.print(table(f"{pp.profile.name} · {pp.profile.display_name} · {pp.precision} · {tag}",
                        ["batch", "latency ms", "samples/s", "bound", "memory GB", "fits"], rows,
                        caption=f"latency: one batch of b single-sample requests, per-request host work included "
                                f"(b x {pp.device.request_overhead.value * 1e6:.3g} us)", caption_justify="left"))
        from ..planning.explain import bound_summary

        for line in bound_summary(pp).values():
            out.print(f"  bound     {line}", markup=False)
        rule = "-" if mem.seed_rule_ok is None else ("ok" if mem.seed_rule_ok else "FAILS")
        out.print(f"  memory    usable {_gb(mem.usable_bytes)} GB; largest batch that fits {mem.max_batch}; seed rule "
                  f"1.5 x params = {_gb(mem.seed_rule_bytes)} GB ({rule}) vs real estimate "
                  f"{_gb(mem.need(max(1, min(mem.max_batch, 32))))} GB at batch {max(1, min(mem.max_batch, 32))}",
                  markup=False)
        if ch.policy is not None:
            sim = ch.sim
            out.print(f"  policy    {_policy_text(ch.policy)}: simulated p50 {_ms(sim.p50)} ms, p99 {_ms(sim.p99)} ms, "
                      f"utilisation {sim.utilisation:.0%}, mean batch {sim.mean_batch:.3g}", markup=False)
        out.print(f"  capacity  {_rate(ch.capacity or 0)} req/s per device within p99; {ch.reason}", markup=False)
        if pp.calibration:
            _print_calibration(pp)
        if explain:
            out.print(table(f"{pp.profile.name}: every figure and its derivation", ["figure", "value", "derivation"],
                            pp.explain))
    if result.skipped:
        out.print()
    for s in result.skipped:
        out.print(f"{s['profile']}: not planned: {s['reason']}", markup=False)
    if len(result.plans) > 1 or result.target_qps:
        _print_bill(result)
    best = result.best
    if best.get("fewest_devices"):
        pick = next(p for p in result.plans if p.profile.name == best["fewest_devices"])
        n = f"{best['devices']} x " if best.get("devices") else ""
        out.print(f"[bold]=> {n}{pick.profile.name}[/bold], {_policy_text(pick.choice.policy)} ({best['reason']})")
    else:
        out.print(f"[bold]=> {best['reason']}[/bold]")


def _rate(x: float | None) -> str:
    return "-" if not x else (f"{x:,.0f}" if x >= 100 else f"{x:.3g}")


def _usd(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"${x:.{digits}g}"


def _print_bill(result) -> None:
    """The comparison table with the bill per profile, then the cheapest and fewest-devices choices with their sums."""
    from ..planning.pricing import PRICE_FIX, unpriced_reason

    bill = result.bill
    lines = {ln.profile: ln for ln in bill.lines}
    rows = []
    for pp in result.plans:
        ch, ln = pp.choice, lines[pp.profile.name]
        pr = ln.price
        inst = "-" if ln.instances is None else f"{ln.instances} x {pr.instance or 'GPU'}" + (
            f" ({pr.gpus_per_instance} GPUs)" if pr.gpus_per_instance > 1 else "")
        rows.append((pp.profile.name, pp.precision, _rate(ch.capacity), "-" if ln.devices is None else ln.devices, inst,
                     _usd(pr.usd_per_gpu_hour if pr else None), _usd(ln.usd_per_hour),
                     _usd(ln.usd_per_million, 3), "yes" if ln.meets_slo else "NO", _policy_text(ch.policy),
                     _ms(ch.sim.p99) if ch.sim else "-"))
    per = "devices" if bill.target_qps else "devices (no target)"
    out.print()
    out.print(table("Comparison" + (f" at {_rate(bill.target_qps)} req/s" if bill.target_qps else " (one device at its "
                                                                                          "capacity within p99)"),
                    ["profile", "precision", "req/s per device", per, "instances", "$/GPU-h", "$/h", "$ per 1M",
                     "meets SLO", "policy", "p99 ms (sim)"], rows))
    unpriced: dict[str, list[str]] = {}
    for pp in result.plans:
        if lines[pp.profile.name].meets_slo and lines[pp.profile.name].price is None:
            unpriced.setdefault(unpriced_reason(pp.profile), []).append(pp.profile.name)
    for why, names in unpriced.items():
        out.print(f"not ranked for cost ({why}): {', '.join(names)}; {PRICE_FIX}", markup=False)
    if bill.cheapest is not None:
        out.print(f"[bold]cheapest:[/bold] {escape(bill.cheapest.arithmetic())}")
    else:
        out.print(f"cheapest: none ({bill.reason})", markup=False)
    if bill.fewest_devices is not None and bill.target_qps:
        f = bill.fewest_devices
        profs = {pp.profile.name: pp.profile for pp in result.plans}
        text = f.arithmetic() if f.ranked else (f"{f.profile}: {f.devices} device{'s' if f.devices != 1 else ''} "
                                                f"(no price: {unpriced_reason(profs[f.profile])})")
        out.print(f"[bold]fewest devices:[/bold] {escape(text)}")


def _print_calibration(pp) -> None:
    cal = pp.calibration
    rows = [(r["batch"], _ms(r["measured_s"]), _ms(r["predicted_s"]), f"{r['error'] * 100:+.1f}%",
             "fit" if r["fitted"] else "held out", _ms(r.get("predicted_b_requests_s"))) for r in cal["rows"]]
    req = pp.device.request_overhead.value * 1e6
    out.print(table(f"{pp.profile.name}: predicted vs measured, one request of b samples through the runtime "
                    "(25th percentile)",
                    ["batch", "measured ms", "predicted ms", "error", "used for", "b requests ms"], rows,
                    caption=f"measured and predicted: one request of b samples (one per-request overhead); "
                            f"b requests: the same batch as b single-sample requests (+{req:.3g} us each), as the "
                            "latency table above counts it", caption_justify="left"))
    f = cal["factors"]
    held = cal.get("max_abs_error_held_out")
    out.print(f"  fitted    compute efficiency {f['eff_compute']:.3g}, memory efficiency {f['eff_memory']:.3g}, "
              f"per-batch overhead {f['batch_overhead_s'] * 1e6:.3g} us, per-op overhead {f['op_overhead_s'] * 1e6:.3g} "
              f"us; max error {cal['max_abs_error']:.1%}" + (f" ({held:.1%} on held-out sizes)" if held is not None
                                                              else ""), markup=False)
    comp = cal.get("compute") or {}
    if comp.get("note"):
        out.print(f"  compute   {comp['note']}", markup=False)
    target = cal.get("target")
    if target is not None and not cal.get("meets_target", True):
        out.print(f"  [bold yellow]accuracy[/bold yellow]  max error {cal['max_abs_error']:.1%} is outside the "
                  f"+-{target:.0%} a calibrated CPU plan usually reaches (docs/planning.md, How accurate is it): read "
                  "these figures with that error, or measure longer (--measure-seconds)")
    m = cal.get("measure")
    if m:
        out.print(f"  measured  {m['seconds_per_batch']:g} s per batch size over {m['rounds']} rounds "
                  "(--measure-seconds)", markup=False)


@click.command()
@click.argument("bundle", type=click.Path())
@click.option("--p99", required=True, help="Latency target at the 99th percentile, e.g. 20ms.")
@click.option("-p", "--profile", default="auto", show_default=True, help="Profile to run under (auto: detect).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the chosen policy to this config.yaml instead of into the bundle.")
@click.option("--no-write", is_flag=True, help="Only measure and report; write nothing.")
@click.option("--duration", default="3s", show_default=True, help="Measured time per sweep point.")
@click.option("--batch-sizes", default="1,8,32", show_default=True, help="max_batch_size values to sweep.")
@click.option("--delays", default="0ms,2ms", show_default=True, help="max_batch_delay values to sweep.")
@click.option("--workers", default=None, help="device_concurrency values to sweep (default: 1,2 with >= 2 cores).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Write the sweep as a PNG.")
@json_option
def tune(bundle: str, p99: str, profile: str, output: str | None, no_write: bool, duration: str, batch_sizes: str,
         delays: str, workers: str | None, plot_path: str | None, as_json: bool) -> int:
    """Sweep the batch policy of BUNDLE on this machine; keep the highest throughput within --p99."""
    from ..planning.tune import grid
    from ..planning.tune import tune as run_tune
    from ..policy import parse_duration

    def ints(text: str, what: str) -> list[int]:
        try:
            vals = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise UserError(f"{what}: expected comma-separated integers, got {text!r}") from None
        if not vals or min(vals) < 1:
            raise UserError(f"{what}: expected integers >= 1, got {text!r}")
        return vals

    sweep = grid(batches=ints(batch_sizes, "--batch-sizes"),
                 delays=[parse_duration(d.strip(), field="--delays") for d in delays.split(",") if d.strip()],
                 workers=ints(workers, "--workers") if workers else None)
    result = run_tune(bundle, p99=p99, profile=profile, duration=parse_duration(duration, field="--duration"),
                      policies=sweep, output=output, write=not no_write, plot=plot_path, progress=progress(not as_json))
    if as_json:
        emit_json(result.to_dict())
        return 0 if result.best is not None else 2
    rows = []
    for pt in result.points:
        pol = pt.policy
        mark = "<= chosen" if pt is result.best else ("" if pt.meets_slo else "misses p99")
        rows.append((pol.max_batch_size, f"{pol.max_batch_delay * 1e3:g}", pol.device_concurrency, pt.clients,
                     _rate(pt.throughput), _ms(pt.p50), _ms(pt.p99),
                     "-" if pt.mean_batch is None else f"{pt.mean_batch:.3g}",
                     ",".join(f"{k}:{v}" for k, v in pt.errors.items()) or "-", mark))
    out.print(table(f"tune {result.model} · p99 <= {result.p99 * 1e3:g} ms",
                    ["max batch", "delay ms", "workers", "callers", "req/s", "p50 ms", "p99 ms", "mean batch",
                     "errors", ""], rows))
    if result.best is None:
        raise UserError(f"no swept policy met p99 <= {result.p99 * 1e3:g} ms on this machine",
                        hint="relax --p99, or sweep smaller --batch-sizes / --delays")
    out.print(f"[bold]=> {_policy_text(result.best.policy)}[/bold]: {_rate(result.best.throughput)} req/s at p99 "
              f"{_ms(result.best.p99)} ms")
    if result.written:
        out.print(f"written to {result.written}", markup=False)
    if result.plot:
        err.print(f"chart written to {result.plot}", markup=False)
    return 0
