"""``xinfer-sdk bench``: closed/open-loop load against a bundle in-process or a running server."""

from __future__ import annotations

import os

import click

from ._common import emit_json, err, fmt, obj, out, progress, table


def _numbers(value: str | None, what: str, cast=int) -> list:
    if not value:
        return []
    try:
        vals = [cast(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}", param_hint=what) from None
    if any(v <= 0 for v in vals):
        raise click.BadParameter("values must be > 0", param_hint=what)
    return vals


@click.command()
@click.argument("bundle", required=False)
@click.option("--url", default=None, help="A running KServe v2 server, e.g. http://127.0.0.1:8000 (or host:8001 "
              "with --protocol grpc).")
@click.option("--model", default=None, help="Model name on the server (with --url).")
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", show_default=True)
@click.option("--concurrency", default=None, help="Closed loop: comma-separated numbers of callers, e.g. 1,4,16,64.")
@click.option("--request-rate", default=None, help="Open loop: comma-separated request rates per second.")
@click.option("--poisson", is_flag=True, help="Open loop with Poisson (exponential) inter-arrival times.")
@click.option("--duration", default="10s", show_default=True, help="Measurement time per point.")
@click.option("--batch", type=int, default=1, show_default=True, help="Samples per request.")
@click.option("--api-key-env", default=None, metavar="VAR", help="Send 'Authorization: Bearer $VAR'.")
@click.option("--plot", "plot_path", default=None, type=click.Path(dir_okay=False),
              help="Write a PNG of latency vs throughput.")
@click.option("--profile", default=None, help="Hardware profile for an in-process BUNDLE (default: detected).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
@click.pass_context
def bench(ctx: click.Context, bundle: str | None, url: str | None, model: str | None, protocol: str,
          concurrency: str | None, request_rate: str | None, poisson: bool, duration: str, batch: int,
          api_key_env: str | None, plot_path: str | None, profile: str | None, as_json: bool) -> int:
    """Measure throughput and p50/p90/p99 latency.

    In-process (BUNDLE): drives the batching core directly, so the difference to --url is what HTTP/gRPC
    cost. With --url/--model: load over KServe v2 (HTTP binary tensors or gRPC).
    """
    from ..errors import UserError
    from ..policy import parse_duration
    from ..server.bench import run_bench

    if (bundle is None) == (url is None):
        raise UserError("give either a BUNDLE (in-process) or --url and --model (a running server)")
    if url is not None and not model:
        raise UserError("--url needs --model NAME")
    concs = _numbers(concurrency, "--concurrency")
    rates = _numbers(request_rate, "--request-rate", float)
    if not concs and not rates:
        concs = [1, 4, 16, 64]
    if poisson and not rates:
        raise UserError("--poisson needs --request-rate")
    api_key = os.environ.get(api_key_env, "") if api_key_env else None
    if api_key_env and not api_key:
        raise UserError(f"--api-key-env {api_key_env}: the environment variable is not set or empty")
    report = run_bench(bundle=bundle, url=url, model=model, protocol=protocol, concurrencies=concs, rates=rates,
                       poisson=poisson, duration=parse_duration(duration, field="--duration"), batch=batch,
                       api_key=api_key, profile=profile, profiles_dirs=obj(ctx).get("profiles_dirs", ()),
                       progress=None if as_json else progress(), plot=plot_path)
    if as_json:
        emit_json(report)
        return 0 if report["ok"] else 1
    rows = []
    for r in report["results"]:
        load = f"c={r['concurrency']}" if r["concurrency"] else f"{r['rate']:g}/s"
        errs = ", ".join(f"{k}:{v}" for k, v in sorted(r["errors"].items())) or "0"
        rows.append([load, f"{r['throughput']:.1f}", fmt(_r(r["p50_ms"])), fmt(_r(r["p90_ms"])),
                     fmt(_r(r["p99_ms"])), r["completed"], errs])
    out.print(table(f"{report['target']} ({report['transport']}, batch {batch}, {report['duration_s']:g}s per point)",
                    ["load", "req/s", "p50 ms", "p90 ms", "p99 ms", "ok", "errors"], rows))
    if report.get("plot"):
        err.print(f"plot: {report['plot']}", markup=False)
    return 0 if report["ok"] else 1


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)
