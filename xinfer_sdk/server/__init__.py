"""KServe v2 (Open Inference Protocol) server on the batching core: HTTP, gRPC, /metrics."""
