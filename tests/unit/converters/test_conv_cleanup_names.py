"""The clean-up step names output axes after the input axes they follow, and keeps a symbolic shape inference it
ran so that INT8 / FP8 pre-processing does not run it a second time."""

from __future__ import annotations

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from converters.cleanup import SYMBOLIC_MARK, _name_output_dims, shapes_complete  # noqa: E402


def _model(out_dim="LayerNormalizationhidden_dim_1", resize=False):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out_dim, 8])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Sigmoid", ["r"], ["y"])]
    g = helper.make_graph(nodes, "g", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_a_generated_output_name_takes_the_input_axis_name_without_the_symbolic_pass():
    m = _model()
    _name_output_dims(m, thorough=False)  # ONNX's own inference is enough for element-wise chains
    assert [d.dim_param for d in m.graph.output[0].type.tensor_type.shape.dim[:2]] == ["batch", "seq"]
    assert not shapes_complete(m)  # no symbolic pass ran: pre-processing must run its own


def test_the_symbolic_pass_is_kept_and_marked_for_the_quantizer():
    # an output axis ONNX's inference cannot name (a Resize by scale 1 of a symbolic axis) makes the thorough pass run
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, "h", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, "gen_1", 8])
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, 1.0, 1.0])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Resize", ["r", "", "scales"], ["y"])]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [scales]), opset_imports=[helper.make_opsetid("", 17)])
    fast = onnx.ModelProto()
    fast.CopyFrom(m)
    _name_output_dims(fast, thorough=False)
    assert not shapes_complete(fast) and not fast.metadata_props
    _name_output_dims(m, thorough=True)  # the symbolic pass ran (its names, floor(1.0*h), are not input names)
    assert m.graph.output[0].type.tensor_type.shape.dim[2].dim_param == "gen_1"  # left as it was
    assert {v.name for v in m.graph.value_info} == {"r"}  # every intermediate tensor typed, for the quantizer
    assert any(p.key == SYMBOLIC_MARK for p in m.metadata_props) and shapes_complete(m)


def test_building_the_same_graph_again_in_one_process_reuses_the_symbolic_pass(monkeypatch):
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    import converters.cleanup as cleanup

    calls = []
    real = SymbolicShapeInference.infer_shapes

    def counted(model, **kw):
        calls.append(1)
        return real(model, **kw)

    monkeypatch.setattr(SymbolicShapeInference, "infer_shapes", staticmethod(counted))
    monkeypatch.setattr(cleanup, "_SYMBOLIC_CACHE", {})
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, "h", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, "gen_1", 8])
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, 1.0, 1.0])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Resize", ["r", "", "scales"], ["y"])]
    made = [helper.make_model(helper.make_graph(nodes, "g", [x], [y], [scales]),
                              opset_imports=[helper.make_opsetid("", 17)]) for _ in range(2)]
    for m in made:  # e.g. one script building the model for the cpu and the t4 profiles
        _name_output_dims(m, thorough=True)
        assert shapes_complete(m)
    assert len(calls) == 1
