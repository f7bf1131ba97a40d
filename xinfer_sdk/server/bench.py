"""``run_bench``: what ``xinfer-sdk bench`` does, as a library call.

In-process (a bundle): the model is loaded here and driven through ``infer_async`` (the batching core
alone). Against a server (``url`` + ``model``): the model's metadata is read over HTTP (or gRPC) to build
inputs, then the same load driver sends binary-tensor HTTP or gRPC requests.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from ..bundle import NUMPY_DTYPES, TensorSpec
from ..errors import UserError
from .clients import GrpcTransport, HttpTransport, InProcess, sample_inputs
from .loadtest import plot as plot_png
from .loadtest import sweep

log = logging.getLogger(__name__)


def _http_metadata(url: str, model: str, api_key: str | None) -> list[TensorSpec]:
    base = url if "://" in url else f"http://{url}"
    req = urllib.request.Request(f"{base.rstrip('/')}/v2/models/{model}")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            doc = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read()).get("error", exc.reason)
        except Exception:
            msg = exc.reason
        raise UserError(f"{base}: model {model!r}: HTTP {exc.code}: {msg}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"cannot reach {base} ({getattr(exc, 'reason', exc)})",
                        hint="is `xinfer-sdk serve` running there?") from None
    return _specs(doc)


def _grpc_metadata(target: str, model: str, api_key: str | None) -> list[TensorSpec]:
    import grpc

    from ._proto import grpc_service_pb2 as pb

    md = (("authorization", f"Bearer {api_key}"),) if api_key else None
    with grpc.insecure_channel(target.split("://", 1)[-1]) as ch:
        call = ch.unary_unary("/inference.GRPCInferenceService/ModelMetadata",
                              request_serializer=pb.ModelMetadataRequest.SerializeToString,
                              response_deserializer=pb.ModelMetadataResponse.FromString)
        try:
            r = call(pb.ModelMetadataRequest(name=model), timeout=10, metadata=md)
        except grpc.RpcError as exc:
            raise UserError(f"{target}: model {model!r}: {exc.code().name}: {exc.details()}") from None
    return _specs({"inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in r.inputs]})


def _specs(doc: dict[str, Any]) -> list[TensorSpec]:
    specs = []
    for t in doc.get("inputs", []):
        dt = NUMPY_DTYPES.get(t["datatype"])
        if dt is None:
            raise UserError(f"input {t['name']!r}: datatype {t['datatype']} is not supported by the load generator")
        specs.append(TensorSpec(t["name"], dt, tuple(int(d) for d in t["shape"])))
    return specs


def run_bench(*, bundle: str | None = None, url: str | None = None, model: str | None = None, protocol: str = "http",
              concurrencies: Sequence[int] = (1, 4, 16, 64), rates: Sequence[float] = (), poisson: bool = False,
              duration: float = 10.0, batch: int = 1, api_key: str | None = None, profile: str | None = None,
              profiles_dirs: Sequence[str] = (), progress: Callable[[int, int, str], None] | None = None,
              plot: str | None = None) -> dict[str, Any]:
    """Closed-loop points per concurrency and open-loop points per rate; returns a JSON-able report."""
    loaded = None
    if bundle is not None:
        from ..runtime.loader import load

        loaded = load(bundle, profile=profile or "auto", profiles_dirs=profiles_dirs)
        inputs = sample_inputs(loaded.inputs, batch)
        target, transport = loaded.name, "in-process"

        def make() -> Any:
            return InProcess(loaded, inputs)
    else:
        if protocol == "grpc":
            specs = _grpc_metadata(url, model, api_key)
        else:
            specs = _http_metadata(url, model, api_key)
        inputs = sample_inputs(specs, batch)
        target, transport = f"{model} @ {url}", protocol

        def make() -> Any:
            if protocol == "grpc":
                return GrpcTransport(url, model, inputs, api_key=api_key)
            return HttpTransport(url, model, inputs, api_key=api_key)

    from ..loadgen import TargetDown
    from ..server.runner import new_event_loop

    loop = new_event_loop()
    try:
        results = loop.run_until_complete(sweep(make, concurrencies=concurrencies, rates=rates, duration=duration,
                                                poisson=poisson, transport=transport, progress=progress))
    except TargetDown as exc:
        what = "connection failed" if exc.error == "connection" else exc.error
        raise UserError(f"the server at {url or target} stopped answering ({what}: {exc.failures} requests in a row "
                        f"over {exc.seconds:.1f}s) after {exc.answered} answered requests at this load point; "
                        "stopping", hint="is `xinfer-sdk serve` still running there? rerun bench once it is "
                                         "back") from None
    finally:
        loop.close()
        if loaded is not None:
            loaded.close()
    report: dict[str, Any] = {
        "target": target, "transport": transport, "batch": batch, "duration_s": duration,
        "results": [r.to_dict() for r in results],
        "ok": all(r.completed > 0 for r in results),
    }
    if loaded is not None:
        report["model"] = {"backend": loaded.describe()["backend"], "policy": loaded.policy.to_dict()}
    if plot:
        report["plot"] = plot_png(results, plot, title=f"{target} ({transport})")
    return report
