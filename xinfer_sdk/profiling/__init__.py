"""Where a request's time goes: the stage recorder, ONNX Runtime's op profile, trace-event JSON, the table.

``xinfer-sdk profile`` (``profiling.run``) is the entry point; ``runtime.trace`` holds the hooks the batching
core and the server call, ``server.tracing`` the OpenTelemetry side.
"""

from .analysis import STAGES, RequestStages, Sent, build_trace, request_stages, summarise
from .recorder import BatchRecord, RequestRecord, StageRecorder

__all__ = ["STAGES", "BatchRecord", "RequestRecord", "RequestStages", "Sent", "StageRecorder", "build_trace",
           "request_stages", "summarise"]
