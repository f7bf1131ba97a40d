"""The protobuf reader behind "as-is" precision, on graphs made by onnx and ONNX Runtime's own FP16 and Q/DQ
converters (the ones converters/ uses), including a model saved with external data; and a raw .onnx loaded
through ``xs.load`` keeps the requested batch maximum on its manifest (what a TensorRT plan is built for)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from xinfer_sdk.runtime.onnx_precision import graph_precision  # noqa: E402


def _mlp():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
                          "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], [w, b])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_fp32_fp16_qdq_and_external_data(tmp_path):
    m = _mlp()
    onnx.save(m, tmp_path / "fp32.onnx")
    assert graph_precision(tmp_path / "fp32.onnx") == "fp32"
    onnx.save(_mlp(), tmp_path / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              size_threshold=0)
    assert graph_precision(tmp_path / "ext.onnx") == "fp32"

    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(m, keep_io_types=True), tmp_path / "fp16.onnx")
    assert graph_precision(tmp_path / "fp16.onnx") == "fp16"

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.it = iter([{"x": rng.standard_normal((2, 16)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(tmp_path / "fp32.onnx"), str(tmp_path / "int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    assert graph_precision(tmp_path / "int8.onnx") == "int8"


def test_raw_onnx_manifest_takes_the_requested_batch(tmp_path):
    import xinfer_sdk as xs

    onnx.save(_mlp(), tmp_path / "mlp.onnx")
    with xs.load(tmp_path / "mlp.onnx", profile="cpu", batching={"max_batch_size": 12}) as m:
        assert m.bundle.manifest.max_batch_size == 12 and m.max_batch_size == 12
        out = m.infer({"x": np.ones((3, 16), np.float32)})
        assert out["y"].shape == (3, 8)


def test_a_model_with_a_scalar_input_batches_the_others_and_keeps_the_scalar(tmp_path):
    """A rank-0 input has no batch axis (review D10): it keeps its rank and is shared by the batch, while the other
    inputs still batch on their own axis (issue 16 item 2; requests merge only when the scalar is equal)."""
    import xinfer_sdk as xs

    g = helper.make_graph([helper.make_node("Mul", ["x", "s"], ["y"])], "scale",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                           helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "scale.onnx")
    with xs.load(tmp_path / "scale.onnx", profile="cpu") as m:
        assert m.max_batch_size > 0
        assert {t.name: t.batch_axis for t in m.inputs} == {"x": 0, "s": None}
        out = m.infer({"x": np.ones((2, 4), np.float32), "s": np.array(3.0, np.float32)})
        np.testing.assert_array_equal(out["y"], np.full((2, 4), 3.0, np.float32))
