"""The build, step by step, in the order the pipeline runs them (each module has one job)."""

from __future__ import annotations

from .pipeline import Step


def _load(ctx):
    from .inputs import load_step

    return load_step(ctx)


def _export(ctx):
    from .export import export_step

    return export_step(ctx)


def _cleanup(ctx):
    from .cleanup import cleanup_step

    return cleanup_step(ctx)


def _budget(ctx):
    from .budget import budget_step

    return budget_step(ctx)


def _fp16(ctx):
    from .fp16 import fp16_step

    return fp16_step(ctx)


def _bf16(ctx):
    from .bf16 import bf16_step

    return bf16_step(ctx)


def _int8(ctx):
    from .int8 import int8_step

    return int8_step(ctx)


def _fp8(ctx):
    from .fp8 import fp8_step

    return fp8_step(ctx)


def _gate(ctx):
    from .accuracy import gate_step

    return gate_step(ctx)


def _padding(ctx):
    from .padding import padding_step

    return padding_step(ctx)


def _tensorrt(ctx):
    from .tensorrt_step import tensorrt_step

    return tensorrt_step(ctx)


STEPS = (
    Step("input", _load, description="read the model (ONNX, TorchScript, torch.export, module:factory, TensorFlow)"),
    Step("export", _export, description="PyTorch / TensorFlow -> ONNX with dynamic axes, verified against the source"),
    Step("cleanup", _cleanup, description="onnx.checker, simplification, shape inference, IO spec"),
    Step("memory_budget", _budget, description="weights + activations + workspace vs the profile's memory"),
    Step("fp16", _fp16, description="FP16 graph, IO kept FP32, sensitive ops blocked"),
    Step("bf16", _bf16, description="BF16 graph (ONNX schemas decide per op), IO kept FP32, sensitive ops blocked"),
    Step("int8", _int8, description="INT8 QDQ by calibration, scheme from the profile"),
    Step("fp8", _fp8, description="FP8 (E4M3) QDQ by calibration, for TensorRT on Ada / Hopper / Blackwell"),
    Step("accuracy_gate", _gate, description="converted vs FP32 reference on held-out samples"),
    Step("padding", _padding, description="--pad: padded batches vs each request alone, before it goes in the bundle"),
    Step("tensorrt", _tensorrt, optional=True, description="engine build plan; the engine when a GPU is here"),
)
