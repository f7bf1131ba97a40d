"""``xs.InferenceServer``: the seed's quick-start API, on the same runtime as everything else.

    server = xs.InferenceServer(model_path="model.onnx", device="cpu", batch_size=32, max_workers=4)
    out = server.infer({"input": x})     # embedded use
    server.run()                         # serve it over KServe v2 HTTP/gRPC (see docs/serving.md)

``batch_size`` maps to ``max_batch_size`` and ``max_workers`` to ``device_concurrency``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..policy import BatchPolicy


class InferenceServer:
    def __init__(self, model_path: str, device: str = "cpu", batch_size: int = 32, max_workers: int = 1, *,
                 max_batch_delay: Any = None, profile: str = "auto", backend: str = "auto", name: str | None = None,
                 host: str = "127.0.0.1", port: int = 8000, grpc_port: int | None = 8001, **load_kw: Any):
        from ..runtime.loader import load

        policy: dict[str, Any] = {"max_batch_size": int(batch_size), "device_concurrency": int(max_workers)}
        if max_batch_delay is not None:
            policy["max_batch_delay"] = max_batch_delay
        self.model = load(model_path, profile=profile, backend=backend, device=device, batching=policy, name=name,
                          **load_kw)
        self.host, self.port, self.grpc_port = host, port, grpc_port

    @property
    def policy(self) -> BatchPolicy:
        return self.model.policy

    def infer(self, inputs: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, np.ndarray]:
        return self.model.infer(inputs, timeout=timeout)

    def submit(self, inputs: Mapping[str, Any], *, timeout: float | None = None):
        return self.model.submit(inputs, timeout=timeout)

    def close(self) -> None:
        self.model.close()

    def __enter__(self) -> InferenceServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
