"""``xinfer-sdk profile``: where a request's time goes (trace-event JSON for Perfetto + a table)."""

from __future__ import annotations

import os

import click

from ._common import emit_json, err, obj, out, table


@click.command()
@click.argument("bundle", required=False)
@click.option("--url", default=None, help="A running server (HTTP), e.g. http://127.0.0.1:8000; needs --model.")
@click.option("--model", default=None, help="Model name on the server (with --url).")
@click.option("--via", type=click.Choice(["core", "http", "grpc"]), default="core", show_default=True,
              help="BUNDLE: drive the batching core directly, or a server started in this process over HTTP/gRPC "
                   "(adds the protocol's share to the table).")
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
              help="Closed-loop callers.")
@click.option("--duration", default="2s", show_default=True, help="Length of the load.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Samples per request.")
@click.option("--out", "out_path", default="profile.json", show_default=True, type=click.Path(dir_okay=False),
              help="Trace-event JSON to write (open it in https://ui.perfetto.dev or chrome://tracing).")
@click.option("--top", type=click.IntRange(min=1), default=8, show_default=True, help="Op types listed.")
@click.option("--no-ops", is_flag=True, help="Leave out ONNX Runtime's op-level profile.")
@click.option("--profile", default=None, help="Hardware profile for an in-process BUNDLE (default: detected).")
@click.option("--backend", default="auto", show_default=True, help="Backend for an in-process BUNDLE.")
@click.option("--api-key-env", default=None, metavar="VAR", help="Send 'Authorization: Bearer $VAR' (with --url).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
@click.pass_context
def profile(ctx: click.Context, bundle: str | None, url: str | None, model: str | None, via: str, concurrency: int,
            duration: str, batch: int, out_path: str, top: int, no_ops: bool, profile: str | None, backend: str,
            api_key_env: str | None, as_json: bool) -> int:
    """Run a short load and show where the time goes: queue, assembly, copies, compute by op type, delivery.

    In-process (BUNDLE): the batching core's stages per request and per batch, merged on one clock with
    ONNX Runtime's op-level profile. With --url/--model: the server's share (its statistics) and the
    network + HTTP share (client latency minus the server's time).
    """
    from ..errors import UserError
    from ..policy import parse_duration
    from ..profiling.run import profile_bundle, profile_url

    if (bundle is None) == (url is None):
        raise UserError("give either a BUNDLE (in-process) or --url and --model (a running server)")
    if url is not None and not model:
        raise UserError("--url needs --model NAME")
    if url is not None and via != "core":
        raise UserError("--via starts a server for a BUNDLE; with --url the server is already running (leave --via "
                        "out)")
    seconds = parse_duration(duration, field="--duration")
    if seconds <= 0:
        raise UserError(f"--duration {duration}: must be longer than 0")
    if url is not None:
        api_key = os.environ.get(api_key_env, "") if api_key_env else None
        if api_key_env and not api_key:
            raise UserError(f"--api-key-env {api_key_env}: the environment variable is not set or empty")
        report = profile_url(url, model, out=out_path, concurrency=concurrency, duration=seconds, batch=batch,
                             api_key=api_key)
    else:
        kw = dict(out=out_path, concurrency=concurrency, duration=seconds, batch=batch, profile=profile or "auto",
                  backend=backend, profiles_dirs=obj(ctx).get("profiles_dirs", ()), ort_ops=not no_ops, top=top)
        if via == "core":
            report = profile_bundle(bundle, **kw)
        else:
            from ..profiling.served import profile_served

            report = profile_served(bundle, via=via, **kw)
    if as_json:
        emit_json(report)
        return 0
    _print(report)
    return 0


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _print(report: dict) -> None:
    s = report["summary"]
    load = report["load"]
    head = (f"{report['target']} ({report['transport']}): {s.get('requests', 0)} requests, "
            f"{load['throughput']:.0f} req/s, p50 {_ms((load['p50'] or 0) * 1e3)} ms, "
            f"p99 {_ms((load['p99'] or 0) * 1e3)} ms")
    if "stages" in s or report["transport"] == "in-process":
        rows = [[st["stage"], _ms(st["ms"]), _pct(st["share"])] for st in s.get("stages", [])]
        rows.append(["request (total)", _ms(s.get("latency_ms")), "100 %"])
        out.print(table(head, ["stage", "ms / request", "share"], rows))
        if s.get("ops"):
            title = "compute by op type (ONNX Runtime kernels"
            title += f"; copies {_pct(s.get('copies_share_of_compute'))} of kernel time)"
            out.print(table(title, ["op", "ms total", "kernels", "share"],
                            [[o["op"], _ms(o["ms_total"]), o["kernels"], _pct(o["share"])] for o in s["ops"]]))
        cuda = s.get("cuda")
        if cuda:
            ms = cuda["ms"]
            out.print(f"CUDA events ({cuda['workers']} workers): h2d {ms['h2d']:.3f} ms, compute {ms['compute']:.3f} ms, "
                      f"d2h {ms['d2h']:.3f} ms in total; copies overlapping another worker's compute: "
                      f"{_pct(cuda['copy_overlap_share'])}")
    else:
        rows = [["server: queue", _ms(s.get("queue_ms"))], ["server: compute", _ms(s.get("compute_ms"))],
                ["server: enqueue -> answer", _ms(s.get("server_ms"))],
                ["network + HTTP", _ms(s.get("network_http_ms")) + f"  ({_pct(s.get('network_http_share'))})"],
                ["client latency (mean)", _ms(s.get("latency_ms"))]]
        out.print(table(head, ["part", "ms / request"], rows))
    for note in report.get("notes", []):
        err.print(f"note: {note}", markup=False)
    err.print(f"trace: {report['trace']} (open in https://ui.perfetto.dev or chrome://tracing)", markup=False)
