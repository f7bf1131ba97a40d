"""``xinfer-sdk serve``: KServe v2 over HTTP and gRPC, /metrics, graceful drain on SIGTERM."""

from __future__ import annotations

import os

import click

from ._common import emit_event, err, json_option, obj, set_option


@click.command()
@click.argument("bundles", nargs=-1, metavar="[NAME=]BUNDLE... | REPOSITORY")
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1: this machine only; 0.0.0.0 = all).")
@click.option("--port", type=int, default=None, help="HTTP port (default 8000; 0 = any free port).")
@click.option("--grpc-port", type=int, default=None, help="gRPC port (default 8001; 0 = any free port).")
@click.option("--no-grpc", is_flag=True, help="Serve HTTP only.")
@click.option("--metrics-port", type=int, default=None,
              help="Also serve /metrics and /v2/health/* on this port, e.g. 8002 (default: only on the HTTP port).")
@click.option("--grpc-impl", type=click.Choice(["native", "grpcio"]), default=None,
              help="gRPC transport: native (our HTTP/2 on the server's event loop; default) or grpcio (grpc.aio).")
@click.option("--grpc-max-connection-age", default=None, metavar="DURATION",
              help="GOAWAY gRPC connections older than this (e.g. 2m) so clients re-resolve and reach new replicas.")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="config.yaml: models, server settings and batch policy (see docs/serving.md).")
@click.option("--api-key-env", default=None, metavar="VAR",
              help="Require 'Authorization: Bearer <key>' on every endpoint but health and /metrics; the key is "
                   "read from the environment variable VAR.")
@click.option("--drain-timeout", default=None, metavar="DURATION",
              help="On SIGTERM, how long to wait for accepted requests (default 30s).")
@click.option("--max-body", default=None, metavar="SIZE", help="Largest request body / gRPC message (default 64MiB).")
@click.option("--header-timeout", default=None, metavar="DURATION",
              help="Request line + headers (HTTP/2: preface + SETTINGS) must arrive within this (default 10s).")
@click.option("--body-timeout", default=None, metavar="DURATION",
              help="A request body / gRPC message must arrive within this once started (default 30s).")
@click.option("--keepalive-timeout", default=None, metavar="DURATION",
              help="Close an idle HTTP/1.1 keep-alive connection after this (default 15s; behind a proxy, set it "
                   "above the proxy's upstream idle timeout).")
@click.option("--idle-timeout", default=None, metavar="DURATION",
              help="GOAWAY an HTTP/2 connection with no open call after this (default 30s).")
@click.option("--max-connections", type=int, default=None, help="Open connections per port (default 4096).")
@click.option("--max-buffered", default=None, metavar="SIZE",
              help="Request bytes all connections together may hold before the model takes them (default 1GiB).")
@click.option("--drain-delay", default=None, metavar="DURATION",
              help="On SIGTERM, keep serving this long with readiness already false, then refuse new work "
                   "(default 0s; on Kubernetes the generated preStop hook does this).")
@click.option("--model-control", type=click.Choice(["none", "poll", "explicit"]), default=None,
              help="none: serve what the repository holds at start (default); poll: re-read it every "
                   "--poll-interval and load / reload / unload to match; explicit: only --load-model at start, then "
                   "the repository load / unload requests (docs/repository.md).")
@click.option("--poll-interval", default=None, metavar="DURATION",
              help="With --model-control poll: how often the repository is re-read (default 5s).")
@click.option("--load-model", "load_model", multiple=True, metavar="NAME",
              help="With --model-control explicit: load this model at start (repeat it; '*' = every model).")
@click.option("--reject-nonfinite", is_flag=True,
              help="Refuse NaN/Inf in float inputs with a 400 naming the input (accepted by default, as Triton does).")
@click.option("--allow-nonfinite", is_flag=True, hidden=True,
              help="Deprecated, does nothing: NaN/Inf are accepted by default.")
@click.option("--trace-otlp", default=None, metavar="URL",
              help="Send OpenTelemetry traces of requests to this OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318 "
                   "(needs xinfer-sdk[otel]).")
@click.option("--trace-rate", type=float, default=None, metavar="R",
              help="Fraction of new traces sampled with --trace-otlp (default 1.0).")
@click.option("--profile", default=None, help="Hardware profile (default: the bundle's / detected).")
@click.option("--device", default=None,
              help="cpu, cuda, cuda:1, rocm:0 (AMD), several: cuda:0,1,2,3, or all (default: from the profile).")
@click.option("--backend", default=None, help="onnxruntime, tensorrt, torch, migraphx (default: auto).")
@click.option("--threads", type=int, default=None, help="CPU threads per worker (default: usable cores / workers).")
@set_option
@json_option
@click.pass_context
def serve(ctx: click.Context, bundles: tuple[str, ...], host: str | None, port: int | None, grpc_port: int | None,
          no_grpc: bool, metrics_port: int | None, grpc_impl: str | None, grpc_max_connection_age: str | None, config: str | None, api_key_env: str | None, drain_timeout: str | None,
          max_body: str | None, header_timeout: str | None, body_timeout: str | None,
          keepalive_timeout: str | None, idle_timeout: str | None, max_connections: int | None,
          max_buffered: str | None, drain_delay: str | None, model_control: str | None, poll_interval: str | None,
          load_model: tuple[str, ...], reject_nonfinite: bool, allow_nonfinite: bool, trace_otlp: str | None,
          trace_rate: float | None, profile: str | None, device: str | None, backend: str | None,
          threads: int | None, overrides: tuple[str, ...], as_json: bool) -> int:
    """Serve one or more bundles (or .onnx files), or a model repository folder, over KServe v2 HTTP + gRPC
    until SIGTERM.

    Triton's clients (tritonclient.http / .grpc, perf_analyzer) work unmodified. Name a model with
    NAME=PATH (default: the bundle's name). A REPOSITORY holds NAME/ or NAME/<version>/ folders (bundles or
    model files); --model-control poll / explicit change what is served while it runs. Exit code 0 after a clean drain. --json: one JSON object per line on
    stdout for each event (ready: ports and models; stopped: exit code), the human lines stay on stderr.
    """
    from ..errors import UserError
    from ..policy import parse_duration
    from ..server.config import build_control, parse_size, read_serve_config
    from ..server.limits import DURATION_KEYS, LIMIT_KEYS, SIZE_KEYS, ServerLimits, flag
    from ..server.runner import (
        DEFAULT_DRAIN_TIMEOUT,
        DEFAULT_GRPC_IMPL,
        DEFAULT_MAX_BODY,
        Server,
        configure_tracing,
        warn_allow_nonfinite,
    )

    cfg = read_serve_config(config, bundles)
    s = cfg.server
    key_var = api_key_env or s.get("api_key_env")
    api_key = None
    if key_var:
        api_key = os.environ.get(key_var, "")
        if not api_key:
            raise UserError(f"--api-key-env {key_var}: the environment variable {key_var} is not set or empty")
    drain = parse_duration(drain_timeout, field="--drain-timeout") if drain_timeout is not None else \
        s.get("drain_timeout", DEFAULT_DRAIN_TIMEOUT)
    body = parse_size(max_body, field="--max-body") if max_body is not None else s.get("max_body", DEFAULT_MAX_BODY)
    flags = {"header_timeout": header_timeout, "body_timeout": body_timeout, "keepalive_timeout": keepalive_timeout,
             "idle_timeout": idle_timeout, "drain_delay": drain_delay, "max_buffered": max_buffered,
             "max_connections": max_connections}
    settings = {k: s[k] for k in LIMIT_KEYS if k in s}
    for key, value in flags.items():
        if value is not None:
            settings[key] = (parse_duration(value, field=flag(key)) if key in DURATION_KEYS else
                             parse_size(value, field=flag(key)) if key in SIZE_KEYS else value)
    limits = ServerLimits.from_settings(settings)
    gport = None if no_grpc else (grpc_port if grpc_port is not None else s.get("grpc_port", 8001))
    if allow_nonfinite or "allow_nonfinite" in s:
        warn_allow_nonfinite()
    poll = parse_duration(poll_interval, field="--poll-interval") if poll_interval is not None else \
        s.get("poll_interval")
    control = build_control(cfg, mode=model_control or s.get("model_control", "none"), poll_interval=poll,
                            load_names=load_model or s.get("load_model", ()), profile=profile, device=device,
                            backend=backend, threads=threads, profiles_dirs=obj(ctx).get("profiles_dirs", ()),
                            overrides=overrides)
    configure_tracing(trace_otlp or s.get("trace_otlp"), trace_rate if trace_rate is not None else
                      s.get("trace_rate"))
    models, seconds = control.initial()
    server = Server(models, host=host or s.get("host", "127.0.0.1"), port=port if port is not None else
                    s.get("port", 8000), grpc_port=gport, api_key=api_key, drain_timeout=drain, max_body=body,
                    load_seconds=seconds, reject_nonfinite=reject_nonfinite or bool(s.get("reject_nonfinite")),
                    limits=limits, control=control,
                    grpc_impl=grpc_impl or s.get("grpc_impl", DEFAULT_GRPC_IMPL),
                    metrics_port=metrics_port if metrics_port is not None else s.get("metrics_port"),
                    grpc_max_connection_age=parse_duration(grpc_max_connection_age, field="--grpc-max-connection-age")
                    if grpc_max_connection_age is not None else s.get("grpc_max_connection_age"))

    import asyncio

    from ..server.runner import new_event_loop

    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        async def main() -> int:
            await server.start()
            served = asyncio.ensure_future(server.serve_started())
            await asyncio.sleep(0)  # serve_started installs the SIGTERM/SIGINT handlers: "ready" means a signal drains
            for m in models:
                err.print(f"serving {m.name!r} version {m.version} ({m.describe()['backend']}, {m.device}, "
                          f"max_batch_size {m.max_batch_size}, workers {m.policy.device_concurrency})", markup=False)
            if control.mode != "none":
                err.print(f"model control: {control.mode}" + (
                    f" (re-reading {control.describe_roots()} every {control.poll_interval:g}s)"
                    if control.mode == "poll" else
                    " (POST /v2/repository/models/NAME/load | unload)"), markup=False)
            grpc = f", gRPC {server.host}:{server.grpc_port} ({server.grpc_impl})" if server.grpc else ""
            if server.ops_http is not None:
                grpc += f", metrics http://{server.host}:{server.metrics_port}/metrics"
            err.print(f"ready: HTTP http://{server.host}:{server.port}{grpc}"
                      f"{' (API key required)' if api_key else ''}; Ctrl-C or SIGTERM drains and stops",
                      markup=False)
            if as_json:
                emit_event(_ready_event(server, models, api_key is not None))
            return await served

        code = loop.run_until_complete(main())
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    err.print("stopped (clean drain)" if code == 0 else "stopped: drain timeout passed", markup=False)
    if as_json:
        emit_event({"event": "stopped", "exit_code": code, "clean": code == 0})
    return code


def _ready_event(server, models, api_key: bool) -> dict:
    """``serve --json``'s ready line: where to connect, and what is served."""
    host = server.host
    return {"event": "ready", "host": host, "http_port": server.port, "http_url": f"http://{host}:{server.port}",
            "grpc_port": server.grpc_port if server.grpc else None,
            "grpc_impl": server.grpc_impl if server.grpc else None,
            "metrics_port": server.metrics_port if server.ops_http is not None else None, "api_key_required": api_key,
            "model_control": server.control.mode if server.control is not None else "none",
            "models": [{"name": m.name, "version": str(m.version), "backend": m.describe()["backend"], "device": str(m.device),
                        "max_batch_size": m.max_batch_size, "workers": m.policy.device_concurrency} for m in models]}
