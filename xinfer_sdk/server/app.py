"""``xs.InferenceServer``: the seed's quick-start API, on the same runtime as everything else.

    server = xs.InferenceServer(model_path="model.onnx", device="cpu", batch_size=32, max_workers=4)
    out = server.infer({"input": x})     # embedded use
    server.run()                         # serve it over KServe v2 HTTP/gRPC (see docs/serving.md)

``batch_size`` maps to ``max_batch_size`` and ``max_workers`` to ``device_concurrency`` (on each device:
``device="cuda:0,1,2,3"`` or ``"all"`` runs that many workers on every GPU, one queue); NaN/Inf inputs are
accepted unless ``reject_nonfinite=True`` (then a 400 names the input); ``limits`` takes a
``xinfer_sdk.server.limits.ServerLimits`` or a dict of its fields (timeouts, connection cap, drain delay; see
docs/security.md). ``run()`` blocks
until SIGTERM/SIGINT, drains (readiness false, intake stopped, accepted requests answered) and returns the
exit code (0 = clean drain); ``start()`` / ``stop()`` do the same from a background thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..policy import BatchPolicy


class InferenceServer:
    def __init__(self, model_path: str, device: str = "cpu", batch_size: int = 32, max_workers: int = 1, *,
                 max_batch_delay: Any = None, profile: str = "auto", backend: str = "auto", name: str | None = None,
                 host: str = "127.0.0.1", port: int = 8000, grpc_port: int | None = 8001,
                 api_key: str | None = None, drain_timeout: float = 30.0, max_body: int = 64 << 20,
                 grpc_impl: str = "native", limits: Any = None, reject_nonfinite: bool = False,
                 allow_nonfinite: bool | None = None, **load_kw: Any):
        from ..runtime.loader import load

        policy: dict[str, Any] = {"max_batch_size": int(batch_size), "device_concurrency": int(max_workers)}
        if max_batch_delay is not None:
            policy["max_batch_delay"] = max_batch_delay
        self.model = load(model_path, profile=profile, backend=backend, device=device, batching=policy, name=name,
                          **load_kw)
        self.host, self.port, self.grpc_port = host, port, grpc_port
        self._serve_kw = {"api_key": api_key, "drain_timeout": drain_timeout, "max_body": max_body,
                          "grpc_impl": grpc_impl, "limits": limits, "reject_nonfinite": reject_nonfinite,
                          "allow_nonfinite": allow_nonfinite}
        self._server: Any = None

    def _make_server(self) -> Any:
        from .runner import Server

        self._server = Server([self.model], host=self.host, port=self.port, grpc_port=self.grpc_port,
                              **self._serve_kw)
        return self._server

    def run(self) -> int:
        """Serve over KServe v2 HTTP (+ gRPC) until SIGTERM/SIGINT; drain; return the exit code."""
        return self._make_server().run()

    def start(self) -> InferenceServer:
        """Serve from a background thread (ports 0 = pick free ones; see ``.port`` / ``.grpc_port`` after)."""
        srv = self._make_server().start_background()
        self.port, self.grpc_port = srv.port, srv.grpc_port
        return self

    def stop(self) -> int:
        """Drain and stop a server started with ``start()``; returns 0 after a clean drain."""
        return self._server.stop() if self._server is not None else 0

    @property
    def policy(self) -> BatchPolicy:
        return self.model.policy

    def infer(self, inputs: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, np.ndarray]:
        return self.model.infer(inputs, timeout=timeout)

    def submit(self, inputs: Mapping[str, Any], *, timeout: float | None = None):
        return self.model.submit(inputs, timeout=timeout)

    def close(self) -> None:
        if self._server is not None and getattr(self._server, "_thread", None) is not None \
                and self._server._thread.is_alive():
            self._server.stop()
        self.model.close()

    def __enter__(self) -> InferenceServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
