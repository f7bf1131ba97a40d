"""xinfer_sdk.graph: FLOPs and bytes checked against hand-computed values on tiny graphs built with onnx.helper."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from xinfer_sdk.errors import ConversionError, UserError  # noqa: E402
from xinfer_sdk.graph import analyze  # noqa: E402
from xinfer_sdk.shapes import parse_shapes  # noqa: E402

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _w(name, *shape, dtype=np.float32):
    return numpy_helper.from_array(np.zeros(shape, dtype=dtype), name)


def conv_model(group=1, bias=True):
    # N x 8 x 32 x 32 -> conv 3x3, 16 out, stride 1, pad 1 -> N x 16 x 32 x 32
    ins = ["x", "w"] + (["b"] if bias else [])
    node = helper.make_node("Conv", ins, ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=group)
    inits = [_w("w", 16, 8 // group, 3, 3)] + ([_w("b", 16)] if bias else [])
    return _model([node], [helper.make_tensor_value_info("x", F, ["N", 8, 32, 32])],
                  [helper.make_tensor_value_info("y", F, ["N", 16, 32, 32])], inits)


def test_conv_flops_match_hand_count():
    c = analyze(conv_model(), batch_size=2)
    out = 2 * 16 * 32 * 32
    assert c.flops == 2 * out * 8 * 9 + out  # MACs x 2 + bias
    assert c.param_count == 16 * 8 * 9 + 16 and c.param_bytes == 4 * c.param_count
    op = c.ops[0]
    assert op.op_class == "conv" and op.precision == "fp32"
    assert op.read_bytes == 2 * 8 * 32 * 32 * 4 and op.write_bytes == out * 4 and op.weight_bytes == c.param_bytes
    assert c.io_bytes == (2 * 8 * 32 * 32 + out) * 4


def test_grouped_conv_divides_by_group():
    assert analyze(conv_model(group=4, bias=False), batch_size=1).flops == 2 * (16 * 32 * 32) * (8 // 4) * 9


def test_conv_transpose_flops():
    # 1 x 4 x 8 x 8, W [4, 6, 2, 2], stride 2 -> 1 x 6 x 16 x 16
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    m = _model([node], [helper.make_tensor_value_info("x", F, ["N", 4, 8, 8])],
               [helper.make_tensor_value_info("y", F, None)], [_w("w", 4, 6, 2, 2)])
    c = analyze(m, batch_size=1)
    assert c.flops == 2 * (4 * 8 * 8) * (6 * 2 * 2)
    assert c.output_shapes["y"] == (1, 6, 16, 16)


def test_gemm_with_transposed_b_and_bias():
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    m = _model([node], [helper.make_tensor_value_info("x", F, ["N", 784])],
               [helper.make_tensor_value_info("y", F, ["N", 1024])], [_w("w", 1024, 784), _w("b", 1024)])
    c = analyze(m, batch_size=3)
    assert c.flops == 2 * 3 * 1024 * 784 + 3 * 1024


def test_batched_matmul_and_attention_as_matmuls():
    # Q [B, H, S, D] x K^T [B, H, D, S] -> scores [B, H, S, S]; softmax; x V [B, H, S, D]
    B, H, S, D = 2, 4, 16, 8
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["o"])]
    vi = [helper.make_tensor_value_info(n, F, ["B", H, "S", D]) for n in ("q", "k", "v")]
    m = _model(nodes, vi, [helper.make_tensor_value_info("o", F, None)])
    c = analyze(m, batch_size=B, shapes=parse_shapes(f"q:1x{H}x{S}x{D}"))
    mm = [o for o in c.ops if o.op_type == "MatMul"]
    assert [o.flops for o in mm] == [2 * B * H * S * S * D] * 2
    assert c.output_shapes["o"] == (B, H, S, D)
    softmax = next(o for o in c.ops if o.op_type == "Softmax")
    assert softmax.op_class == "normalization" and not softmax.fused  # a row reduction is not an epilogue


def test_onnx_attention_op_counts_qk_and_av():
    B, H, S, D = 1, 2, 10, 4
    node = helper.make_node("Attention", ["q", "k", "v"], ["o"])
    vi = [helper.make_tensor_value_info(n, F, [B, H, S, D]) for n in ("q", "k", "v")]
    m = _model([node], vi, [helper.make_tensor_value_info("o", F, None)], opset=23)
    m.ir_version = 10
    c = analyze(m)
    assert c.ops[0].op_class == "matmul"
    assert c.flops == 4 * B * H * S * S * D + 5 * B * H * S * S


def test_epilogue_fusion_and_residual_read():
    # conv -> relu -> add(residual x) : relu and add run in the conv epilogue; add still reads x
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Add", ["r", "x"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, ["N", 4, 8, 8])],
               [helper.make_tensor_value_info("y", F, None)], [_w("w", 4, 4, 1, 1)])
    c = analyze(m, batch_size=1)
    relu, add = c.ops[1], c.ops[2]
    assert relu.fused and add.fused and relu.bytes == 0
    assert add.read_bytes == 4 * 8 * 8 * 4 and add.write_bytes == 0


def test_symbolic_sequence_needs_shapes_with_a_clear_error():
    node = helper.make_node("Relu", ["ids"], ["y"])
    m = _model([node], [helper.make_tensor_value_info("ids", F, ["batch", "seq"])],
               [helper.make_tensor_value_info("y", F, None)])
    with pytest.raises(UserError, match=r"'ids'.*'seq'.*--shapes ids:"):
        analyze(m, batch_size=4)
    c = analyze(m, batch_size=4, shapes=parse_shapes("ids:1x8..1x64..1x128"), which="opt")
    assert c.input_shapes["ids"] == (4, 64)
    assert analyze(m, batch_size=4, shapes=parse_shapes("ids:1x8..1x64..1x128"), which="max").input_shapes["ids"] \
        == (4, 128)


def test_shared_symbolic_name_propagates_between_inputs():
    nodes = [helper.make_node("Add", ["a", "b"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("a", F, ["batch", "seq"]),
                       helper.make_tensor_value_info("b", F, ["batch", "seq"])],
               [helper.make_tensor_value_info("y", F, None)])
    c = analyze(m, batch_size=2, shapes=parse_shapes("a:1x32"))
    assert c.input_shapes == {"a": (2, 32), "b": (2, 32)}


def test_bad_shapes_are_user_errors():
    m = conv_model()
    with pytest.raises(UserError, match="no input 'nope'"):
        analyze(m, shapes=parse_shapes("nope:1x2"))
    with pytest.raises(UserError, match="rank"):
        analyze(m, shapes=parse_shapes("x:1x8"))
    with pytest.raises(UserError, match="fixed to 8"):
        analyze(m, shapes=parse_shapes("x:1x9x32x32"))
    with pytest.raises(UserError, match="which"):
        analyze(m, which="median")


def test_missing_file_is_a_conversion_error(tmp_path):
    with pytest.raises(ConversionError):
        analyze(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \xff\xfe")
    with pytest.raises(ConversionError):
        analyze(bad)


def test_int8_qdq_weights_count_at_one_byte():
    wq = numpy_helper.from_array(np.ones((16, 8), dtype=np.int8), "wq")
    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s")
    zp = numpy_helper.from_array(np.array(0, dtype=np.int8), "zp")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "s", "zp"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["y"]),
             helper.make_node("QuantizeLinear", ["y", "s", "zp"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "s", "zp"], ["out"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, ["N", 16])],
               [helper.make_tensor_value_info("out", F, None)], [wq, scale, zp])
    c = analyze(m, batch_size=4)
    mm = next(o for o in c.ops if o.op_type == "MatMul")
    assert mm.precision == "int8" and c.precision == "int8"
    assert mm.weight_bytes == 16 * 8 and mm.read_bytes == 4 * 16 and mm.write_bytes == 4 * 8
    assert all(o.fused and o.bytes == 0 for o in c.ops if o.op_class == "quant")
    assert c.param_bytes == 16 * 8 + 4 + 1
    assert c.param_bytes_by_use["matrix"] == c.param_bytes  # weight, scale and zero point all feed the MatMul


def test_fp16_graph_is_priced_at_two_bytes():
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    w = numpy_helper.from_array(np.zeros((32, 32), dtype=np.float16), "w")
    m = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 32])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)], [w])
    c = analyze(m, batch_size=2)
    assert c.precision == "fp16" and c.param_bytes == 32 * 32 * 2 and c.ops[0].read_bytes == 2 * 32 * 2


def test_peak_live_activation_memory_frees_dead_tensors():
    # x(100) -> a(1000) -> b(10) -> c(1000) : peak is when a (1000) and b (10) coexist... then a dies
    nodes = [helper.make_node("Tile", ["x", "r1"], ["a"]),
             helper.make_node("ReduceSum", ["a", "ax"], ["b"], keepdims=1),
             helper.make_node("Tile", ["b", "r2"], ["c"])]
    inits = [numpy_helper.from_array(np.array([1, 10], dtype=np.int64), "r1"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "ax"),
             numpy_helper.from_array(np.array([1, 1000], dtype=np.int64), "r2")]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, [1, 100])],
               [helper.make_tensor_value_info("c", F, None)], inits)
    c = analyze(m)
    # live: x 400 B; +a 4000 -> 4400 (x dies); +b 4 -> 4004 (a dies); +c 4000 -> 4004
    assert c.activation_bytes == 4400
    assert not c.batched and c.batch_size == 1


def test_model_file_path_and_linearity_in_batch(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(conv_model(), p)
    one, four = analyze(p, batch_size=1), analyze(str(p), batch_size=4)
    assert four.flops == 4 * one.flops and four.io_bytes == 4 * one.io_bytes
    assert four.param_bytes == one.param_bytes


def test_gelu_chain_runs_in_the_matmul_epilogue():
    # MatMul -> x; gelu(x) = x * 0.5 * (1 + erf(x / sqrt2)): x is read twice, but only by element-wise ops
    c = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.float32), name)  # noqa: E731
    nodes = [helper.make_node("MatMul", ["a", "w"], ["x"]),
             helper.make_node("Div", ["x", "s2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["p"]), helper.make_node("Mul", ["x", "p"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("a", F, ["N", 8])], [helper.make_tensor_value_info("y", F, None)],
               [_w("w", 8, 32), c("s2", 1.4142), c("one", 1.0), c("half", 0.5)])
    cost = analyze(m, batch_size=4)
    assert all(o.fused and o.read_bytes == 0 and o.write_bytes == 0 for o in cost.ops[1:])  # scalars: weights
    assert cost.ops[0].write_bytes == 4 * 32 * 4  # the epilogue's result is written once


def test_transposes_feeding_a_matmul_are_operand_layouts_and_embeddings_read_rows():
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"]),  # [N, 16] rows of a [1000, 16] table
             helper.make_node("Transpose", ["emb"], ["t"], perm=[1, 0]),
             helper.make_node("MatMul", ["t", "emb"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])],
               [helper.make_tensor_value_info("y", F, None)], [_w("table", 1000, 16)])
    cost = analyze(m, batch_size=8)
    gather, transpose, matmul = cost.ops
    assert gather.weight_bytes == 8 * 16 * 4  # 8 rows, not the 64 kB table
    assert cost.param_bytes_by_use == {"matrix": 0.0, "other": 1000 * 16 * 4, "int": 0.0}
    assert transpose.fused and transpose.bytes == 0
    assert matmul.flops == 2 * 16 * 16 * 8
    out = _model([helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])],
                 [helper.make_tensor_value_info("x", F, ["N", 4])], [helper.make_tensor_value_info("y", F, None)])
    assert not analyze(out, batch_size=2).ops[0].fused  # a transpose that is the output is a real copy
