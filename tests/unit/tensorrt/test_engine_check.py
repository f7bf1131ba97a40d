"""The engine-precision check on inspector JSON shaped like TensorRT's (no GPU needed).

The layer records follow the JSON that ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``
writes for an engine built with ProfilingVerbosity.DETAILED: the example layer in NVIDIA's TensorRT
developer guide ("Engine Inspector": a CaskConvolution with "Thirty-two wide channel vectorized row major Int8
format" tensors, "Weights": {"Type": "Int8"}), and the format strings NVIDIA's engine explorer maps
(NVIDIA/TensorRT tools/experimental/trt-engine-explorer/trex/activations.py), including kgen's "Half" and the
"N/A due to dynamic shapes" an engine reports without an execution context.
"""

from __future__ import annotations

import json

import pytest
from xinfer_sdk.converters import engine_check as ec


def t(name, fmt, dims=(16, 64, 56, 56)):
    return {"Name": name, "Location": "Device", "Dimensions": list(dims), "Format/Datatype": fmt}


def conv(name, fmt_in, fmt_out=None, weights="Half"):
    return {"Name": name, "LayerType": "CaskConvolution", "Inputs": [t(name + ".in", fmt_in)],
            "Outputs": [t(name + ".out", fmt_out or fmt_in)], "ParameterType": "Convolution", "Kernel": [3, 3],
            "Weights": {"Type": weights, "Count": 36864}, "Bias": {"Type": "Float", "Count": 64},
            "TacticName": "sm80_xmma_fprop_implicit_gemm_f16f16_f16f16_f16_nhwckrsc_nhwc", "TacticValue": "0x1"}


def reformat(name, fmt_in, fmt_out):
    return {"Name": f"Reformatting CopyNode for Input Tensor 0 to {name}", "LayerType": "Reformat",
            "Inputs": [t("x", fmt_in)], "Outputs": [t("x'", fmt_out)], "TacticValue": "0x0"}


def pool(fmt):
    return {"Name": "pool", "LayerType": "CaskPooling", "ParameterType": "Pooling", "Inputs": [t("p", fmt)],
            "Outputs": [t("q", fmt)]}


def gemm(fmt):
    return {"Name": "/fc/Gemm", "LayerType": "CaskGemmMatrixMultiply", "ParameterType": "MatrixMultiply",
            "Inputs": [t("a", fmt, (16, 2048)), t("w", fmt, (2048, 1000))], "Outputs": [t("logits", fmt, (16, 1000))]}


def engine(*layers):
    return json.dumps({"Layers": list(layers), "Bindings": ["images", "logits"]})


FP16_CNN = engine(reformat("conv1", "Row major linear FP32", "Channel major FP16 format where channel % 8 == 0"),
                  conv("conv1", "Channel major FP16 format where channel % 8 == 0"),
                  pool("Channel major FP16 format where channel % 8 == 0"), gemm("Row major linear FP16 format"),
                  reformat("out", "Row major linear FP16 format", "Row major linear FP32"))
FP32_CNN = engine(conv("conv1", "Row major linear FP32", weights="Float"), pool("Row major linear FP32"),
                  gemm("Row major linear FP32"))


def test_format_strings_map_to_precisions():
    cases = {"Row major linear FP32": "fp32", "Row major linear FP16 format": "fp16",
             "Channel major FP16 format where channel % 8 == 0": "fp16",
             "Thirty-two wide channel vectorized row major Int8 format.": "int8", "Row major Int8 format": "int8",
             "Row major linear BFloat16 format": "bf16", "Channel major BFloat16 format where channel % 8 == 0": "bf16",
             "Row major linear FP8 format": "fp8", "Half": "fp16", "Float": "fp32", "BFloat16": "bf16", "FP8": "fp8",
             "Row major linear UInt8 format": "uint8", "Row major linear Int32": "int32", "Row major linear BOOL": "bool",
             "N/A due to dynamic shapes": None, "Unknown format": None, "": None}
    assert {k: ec.tensor_precision(k) for k in cases} == cases


def test_fp16_engine_passes_and_is_summarised():
    s = ec.summarize(FP16_CNN, "fp16")
    assert s["verdict"] == "ok" and s["basis"] == "flop_layers"
    assert s["flop_layers"] == {"fp16": 2} and s["compute_layers"] == {"fp16": 3}  # reformats are bookkeeping
    assert s["share"] == {"fp16": 1.0} and s["layers"] == 5
    assert ec.describe(s) == "FLOP layers: fp16 2 (100%); 5 layers"


def test_fp16_label_on_an_all_fp32_engine_fails():
    s = ec.summarize(FP32_CNN, "fp16")
    assert s["verdict"] == "failed"
    assert s["reason"] == "no FLOP layer runs in FP16 (FLOP layers: fp32 2 (100%); 3 layers)"
    assert ec.summarize(FP32_CNN, "bf16")["verdict"] == "failed"
    assert ec.summarize(FP32_CNN, "fp32")["verdict"] == "ok"  # nothing lower was asked for


def test_mixed_precision_passes_with_its_share():
    s = ec.summarize(engine(conv("c1", "Row major linear FP32", weights="Float"),
                            conv("c2", "Channel major FP16 format where channel % 8 == 0"), gemm("Half")), "fp16")
    assert s["verdict"] == "ok" and s["share"] == {"fp16": 0.6667, "fp32": 0.3333} and "2 of 3" in s["reason"]


def test_int8_qdq_engine_counts_the_int8_convolution_not_the_quantize_layer():
    quant = {"Name": "QuantizeLinear_7", "LayerType": "Scale", "ParameterType": "Quantize",
             "Inputs": [t("images", "Row major linear FP32")],
             "Outputs": [t("q", "Thirty-two wide channel vectorized row major Int8 format")]}
    int8_conv = conv("conv1 + QuantizeLinear_12", "Thirty-two wide channel vectorized row major Int8 format.",
                     weights="Int8")
    s = ec.summarize(engine(quant, int8_conv, gemm("Row major linear FP16 format")), "int8")
    assert s["verdict"] == "ok" and s["flop_layers"] == {"fp16": 1, "int8": 1}
    # the same engine without the INT8 convolution: only a Quantize layer touches INT8 -> not INT8
    s = ec.summarize(engine(quant, conv("conv1", "Row major linear FP16 format"), gemm("Half")), "int8")
    assert s["verdict"] == "failed" and "no FLOP layer runs in INT8" in s["reason"]


def test_bf16_and_fp8_engines():
    assert ec.summarize(engine(gemm("Row major linear BFloat16 format")), "bf16")["verdict"] == "ok"
    assert ec.summarize(engine(gemm("Row major linear FP16 format")), "bf16")["verdict"] == "failed"
    assert ec.summarize(engine(gemm("Row major linear FP8 format")), "fp8")["verdict"] == "ok"


def test_without_flop_layers_compute_layers_decide():
    s = ec.summarize(engine(pool("Half"), {"Name": "act", "LayerType": "PointWiseV2", "ParameterType": "PointWise",
                                           "Inputs": [t("a", "Half")], "Outputs": [t("b", "Half")]}), "fp16")
    assert s["basis"] == "compute_layers" and s["verdict"] == "ok"


def test_myelin_graph_counts_as_flop_bearing():
    myelin = {"Name": "{ForeignNode[/encoder/layer.0/attention/MatMul.../encoder/layer.1/output/Add]}",
              "LayerType": "Myelin", "Inputs": [t("hidden", "Half", (1, 128, 768))],
              "Outputs": [t("out", "Half", (1, 128, 768))]}
    assert ec.summarize(engine(myelin), "fp16")["flop_layers"] == {"fp16": 1}


@pytest.mark.parametrize("info, words", [
    (engine(gemm("N/A due to dynamic shapes")), "no tensor formats"),
    (json.dumps({"Layers": ["conv1", "pool"], "Bindings": ["x"]}), "names only"),
    (json.dumps({"Layers": [], "Bindings": []}), "no layers"),
    ("conv1\npool\n", "not JSON"),
])
def test_no_formats_means_unverified_not_failed(info, words):
    s = ec.summarize(info, "fp16")
    assert s["verdict"] == "unverified" and words in s["reason"]


class _Inspector:
    def __init__(self, info):
        self.info, self.execution_context, self.formats = info, None, []

    def get_engine_information(self, fmt):
        self.formats.append(fmt)
        return self.info if self.execution_context is not None else engine(gemm("N/A due to dynamic shapes"))


class _Context:
    def __init__(self):
        self.shapes = {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = shape
        return True


class _Engine:
    def __init__(self, info):
        self.inspector, self.context = _Inspector(info), _Context()

    def create_execution_context(self):
        return self.context

    def create_engine_inspector(self):
        return self.inspector


def test_inspect_engine_binds_a_context_at_the_opt_shapes():
    import types

    trt = types.SimpleNamespace(LayerInformationFormat=types.SimpleNamespace(JSON="JSON"))
    eng = _Engine(FP16_CNN)
    plan = {"precision": "fp16", "profiles": [{"images": {"min": [1, 3, 8, 8], "opt": [8, 3, 8, 8], "max": [16, 3, 8, 8]}}]}
    s = ec.inspect_engine(trt, eng, plan)
    assert eng.context.shapes == {"images": (8, 3, 8, 8)} and eng.inspector.execution_context is eng.context
    assert eng.inspector.formats == ["JSON"] and s["verdict"] == "ok"
    broken = types.SimpleNamespace(create_execution_context=lambda: (_ for _ in ()).throw(RuntimeError("OOM")))
    s = ec.inspect_engine(trt, broken, plan)
    assert s["verdict"] == "unverified" and "RuntimeError: OOM" in s["reason"]


def test_weights_type_decides_when_formats_are_missing():
    # a dynamic-shape engine without a context still names its weights' type (DETAILED "Weights": {"Type"})
    s = ec.summarize(engine(conv("c", "N/A due to dynamic shapes", weights="Half")), "fp16")
    assert s["verdict"] == "ok" and s["flop_layers"] == {"fp16": 1}
