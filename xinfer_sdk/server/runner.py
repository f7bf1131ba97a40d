"""Start, serve and drain: HTTP + gRPC + /metrics on ONE asyncio event loop (uvloop when installed).

    server = Server(models, host="127.0.0.1", port=8000, grpc_port=8001)
    exit_code = server.run()            # blocks; SIGTERM / SIGINT drain it

Drain (SIGTERM, SIGINT, or ``request_stop()``), built so that no client sees a connection reset:
  1. readiness goes false; with ``limits.drain_delay`` the server keeps serving normally that long (for load
     balancers that need time to notice), then
  2. every model stops taking new requests: new work is answered 503 + ``Connection: close`` / UNAVAILABLE, and
     gRPC connections get GOAWAY; the listeners stay open, so connections the kernel has already queued are
     accepted and answered instead of reset;
  3. every accepted request is answered;
  4. each listener is sealed (no new handshake completes; a late client's connect is refused, never reset), its
     backlog is picked up and answered, and it closes;
  5. idle connections close, the models shut down.
``run()`` returns 0 after a clean drain and 1 when ``drain_timeout`` passed first (what was still queued then is
answered 503). A second signal skips the waits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

from .._lazy import require
from ..errors import UserError
from .limits import RequestBudget, ServerLimits, fd_budget
from .service import Service

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 64 << 20
DEFAULT_DRAIN_TIMEOUT = 30.0
DEFAULT_GRPC_IMPL = "native"
GRPC_IMPLS = ("native", "grpcio")  # our HTTP/2 on this loop (h2grpc/) | grpc.aio (C-core)
_POLL = 0.01


def warn_allow_nonfinite() -> None:
    log.warning("allow_nonfinite / --allow-nonfinite is deprecated and does nothing: NaN and Inf are accepted by "
                "default; use reject_nonfinite / --reject-nonfinite to refuse them")


def configure_tracing(endpoint: str | None, rate: float | None, service_name: str = "xinfer-sdk") -> bool:
    """Switch request tracing on (``server.tracing.configure``) when an OTLP endpoint is given. False when
    this build has no tracing support."""
    if endpoint is None:
        if rate is not None:
            raise UserError("--trace-rate needs --trace-otlp URL (where to send the traces)",
                            hint="e.g. --trace-otlp http://127.0.0.1:4318 --trace-rate 0.01")
        return True
    from . import tracing

    configure = getattr(tracing, "configure", None)
    if configure is None:
        log.warning("--trace-otlp / --trace-rate: this build of xinfer-sdk cannot trace requests (no "
                    "xinfer_sdk.server.tracing.configure); serving without tracing")
        return False
    configure(endpoint, 1.0 if rate is None else float(rate), service_name)
    return True


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (XINFER_EVENT_LOOP=asyncio forces the standard loop)."""
    if os.environ.get("XINFER_EVENT_LOOP", "").lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class Server:
    """Serves ``Model`` objects over KServe v2 HTTP (+ gRPC when ``grpc_port`` is not None)."""

    def __init__(self, models: Mapping[str, Any] | list[Any], *, host: str = "127.0.0.1", port: int = 8000,
                 grpc_port: int | None = 8001, api_key: str | None = None,
                 drain_timeout: float = DEFAULT_DRAIN_TIMEOUT, max_body: int = DEFAULT_MAX_BODY,
                 load_seconds: Mapping[str, float] | None = None, metrics: bool = True, gpu_metrics: bool = True,
                 allow_nonfinite: bool | None = None, grpc_impl: str = DEFAULT_GRPC_IMPL, metrics_port: int | None = None,
                 grpc_max_connection_age: float | None = None, limits: ServerLimits | Mapping[str, Any] | None = None,
                 reject_nonfinite: bool = False, control: Any = None):
        require("httptools", purpose="the HTTP server")
        if max_body < 1024:
            raise UserError(f"--max-body must be at least 1 KiB, got {max_body} bytes")
        if grpc_impl not in GRPC_IMPLS:
            raise UserError(f"--grpc-impl {grpc_impl!r}: expected one of {', '.join(GRPC_IMPLS)}")
        self.grpc_impl = grpc_impl
        if allow_nonfinite is not None:
            warn_allow_nonfinite()
        self.service = Service(models, api_key=api_key, load_seconds=load_seconds, reject_nonfinite=reject_nonfinite)
        self.control = control  # a ModelControl (repository, --model-control): None serves ``models`` as given
        if control is not None:
            control.drain_timeout = float(drain_timeout)
            control.attach(self.service)
        self.host, self.port, self.grpc_port = host, int(port), grpc_port
        # A second listener with health + /metrics only (Triton's 8002): scrapes and probes never queue behind
        # inference traffic, and the API port can be exposed without exposing metrics.
        self.metrics_port = metrics_port
        self.ops_http: Any = None
        self.grpc_max_connection_age = grpc_max_connection_age
        self.drain_timeout = float(drain_timeout)
        self.max_body = int(max_body)
        if isinstance(limits, Mapping):
            limits = ServerLimits.from_settings(dict(limits))
        self.limits = limits if limits is not None else ServerLimits()
        self.budget = RequestBudget(self.limits.max_buffered)
        self._metrics = None
        if metrics:
            from .metrics import Metrics

            self._metrics = Metrics(self.service, gpus=gpu_metrics)
        self.http: Any = None
        self.grpc: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._force = False
        self.started = threading.Event()
        self.drained_cleanly: bool | None = None

    # -- lifecycle on the running loop ------------------------------------------------------------------
    async def start(self) -> None:
        from .http_server import HttpServer
        from .routes import Router

        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.control is not None:
            self.control.start()
        render = self._metrics.render if self._metrics else None
        # with a metrics port, /metrics lives there only: the API port can be exposed without it
        router = Router(self.service, metrics=render if self.metrics_port is None else None)
        listeners = 1 + (self.metrics_port is not None) + (self.grpc_port is not None)
        cap = fd_budget(self.limits.max_connections, listeners)
        if cap != self.limits.max_connections:
            self.limits = dataclasses.replace(self.limits, max_connections=cap)
        self.http = HttpServer(router, max_body=self.max_body, limits=self.limits, budget=self.budget)
        try:
            self.port = await self.http.start(self.host, self.port)
        except OSError as exc:
            raise UserError(f"cannot listen on {self.host}:{self.port} for HTTP ({exc.strerror or exc})",
                            hint="pick another --port or stop what uses it") from None
        if self.metrics_port is not None:
            self.ops_http = HttpServer(Router(self.service, metrics=render, ops_only=True),
                                       max_body=64 << 10, limits=self.limits, budget=self.budget)
            try:
                self.metrics_port = await self.ops_http.start(self.host, self.metrics_port)
            except OSError as exc:
                await self.http.close()
                raise UserError(f"cannot listen on {self.host}:{self.metrics_port} for metrics "
                                f"({exc.strerror or exc})", hint="pick another --metrics-port (0 = any free port)") \
                    from None
        if self.grpc_port is not None:
            if self.grpc_impl == "native":
                from .h2grpc import NativeGrpcServer as GrpcServer
            else:
                from .grpcio_server import GrpcServer

            self.grpc = GrpcServer(self.service, max_message=self.max_body, net=self.limits, budget=self.budget,
                                   max_connection_age=self.grpc_max_connection_age)
            try:
                self.grpc_port = await self.grpc.start(self.host, self.grpc_port)
            except (OSError, RuntimeError) as exc:
                await self.http.close()
                if self.ops_http is not None:
                    await self.ops_http.close(linger=0)
                raise UserError(f"cannot listen on {self.host}:{self.grpc_port} for gRPC ({exc})",
                                hint="pick another --grpc-port (0 = any free port)") from None
        log.info("%-28s | HTTP on %s:%d, gRPC on %s, metrics on %s, models: %s", "server", self.host, self.port,
                 f"{self.host}:{self.grpc_port} ({self.grpc_impl})" if self.grpc else "off",
                 f"{self.host}:{self.metrics_port}" if self.ops_http else "the HTTP port",
                 ", ".join(self.service.models))
        self.started.set()

    def request_stop(self, force: bool = False) -> None:
        """Thread-safe: begin the drain (as SIGTERM does)."""
        if self.loop is None or self._stop is None:
            return
        self.loop.call_soon_threadsafe(self._on_signal if not force else self._force_stop)

    def _on_signal(self) -> None:
        if self._stop.is_set():
            log.warning("second stop signal: not waiting for the drain any longer")
            self._force = True
        self._stop.set()

    def _force_stop(self) -> None:
        self._force = True
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def drain(self) -> bool:
        """The drain of the module docstring. True if every accepted request was answered in time."""
        svc = self.service
        loop = asyncio.get_running_loop()
        if self.limits.drain_delay > 0 and not self._force:
            svc.unready = True
            log.info("%-28s | not ready; serving %.1fs more before refusing new work (drain_delay)", "server",
                     self.limits.drain_delay)
            end = loop.time() + self.limits.drain_delay
            while loop.time() < end and not self._force:
                await asyncio.sleep(min(0.05, self.limits.drain_delay))
        t0 = time.perf_counter()
        deadline = t0 + self.drain_timeout
        svc.begin_drain()  # also stops the repository poll; a load under way does not start serving
        if self.grpc is not None:  # GOAWAY at once: clients move their next calls to other replicas
            self.grpc.begin_drain()
        log.info("%-28s | draining: %d request(s) in flight", "server", svc.in_flight())

        def busy() -> bool:
            return bool(svc.in_flight() or self.http.pending_answers())

        while busy() and time.perf_counter() < deadline and not self._force:
            await asyncio.sleep(_POLL)
        # seal the listeners and answer what the kernel had queued (503 / GOAWAY), then close them
        closing = [self.http.close_listener()]
        if self.grpc is not None:
            closing.append(self.grpc.close_listener())
        await asyncio.gather(*closing)
        while busy() and time.perf_counter() < deadline and not self._force:
            await asyncio.sleep(_POLL)
        clean = not busy()
        if self.grpc is not None:
            await self.grpc.stop(0 if self._force else max(0.1, deadline - time.perf_counter()))
        await self.http.close()
        if self.ops_http is not None:  # kept open through the drain: readiness 503 and metrics stay visible
            await self.ops_http.close_listener()
            await self.ops_http.close(linger=0)
        if self.control is not None:  # versions retired by a reload are still answering: let them finish
            try:
                await asyncio.wait_for(self.control.wait_idle(), max(0.1, deadline - time.perf_counter()))
            except asyncio.TimeoutError:
                clean = False
        left = max(0.1, deadline - time.perf_counter())
        closed = await loop.run_in_executor(None, svc.close, left)
        from . import tracing
        shutdown = getattr(tracing, "shutdown", None)
        if shutdown is not None and tracing.TRACER is not None:  # flush the last spans of an in-process stop
            await loop.run_in_executor(None, shutdown)
        await asyncio.sleep(0)  # let the last answers (503s of a forced drain) be written
        self.drained_cleanly = clean and closed
        log.info("%-28s | stopped after %.2fs drain (%s)", "server", time.perf_counter() - t0,
                 "clean" if self.drained_cleanly else "timeout: requests still running were answered 503")
        return self.drained_cleanly

    async def serve(self, install_signals: bool = True) -> int:
        await self.start()
        return await self.serve_started(install_signals)

    async def serve_started(self, install_signals: bool = True) -> int:
        """After ``start()``: wait for SIGTERM/SIGINT (or ``request_stop``), drain, return the exit code."""
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self._on_signal)
                except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / Windows
                    pass
        await self._stop.wait()
        ok = await self.drain()
        return 0 if ok else 1

    # -- blocking entry points --------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGTERM/SIGINT, drain, return the exit code (0 = clean drain)."""
        loop = new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            return loop.run_until_complete(self.serve())
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def start_background(self, timeout: float = 30.0) -> Server:
        """Serve from a daemon thread (tests, notebooks); ``stop()`` drains it."""
        self._thread_error: BaseException | None = None

        def target() -> None:
            loop = new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                self._exit_code = loop.run_until_complete(self.serve(install_signals=False))
            except BaseException as exc:  # reported by start_background / stop
                self._thread_error = exc
                self.started.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=target, name="xinfer-server", daemon=True)
        self._thread.start()
        if not self.started.wait(timeout):
            raise TimeoutError("the server did not start in time")
        if self._thread_error is not None:
            raise self._thread_error
        return self

    def stop(self, timeout: float | None = None) -> int:
        self.request_stop()
        self._thread.join(timeout if timeout is not None else self.drain_timeout + 10)
        if self._thread_error is not None:
            raise self._thread_error
        return getattr(self, "_exit_code", 1)

    def __enter__(self) -> Server:
        return self.start_background()

    def __exit__(self, *exc: Any) -> None:
        if getattr(self, "_thread", None) is not None and self._thread.is_alive():
            self.stop()
