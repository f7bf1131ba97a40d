"""A YOLO-style detection head ([N, 4+C, anchors]: box coordinates concatenated with sigmoid class scores) built
in FP16 for t4 with default settings: the gate decodes and matches boxes, and never takes top-1 over anchors
(issue 16: it failed with 'top-1 agreement 0.90' and a fine cosine). Made in-process (no exporter installed)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

CLASSES, SIDE, STRIDE = 3, 64, 8


def make_yolo_head(path, layout="channels"):
    """images [N, 3, 64, 64] -> Conv stride 8 -> 64 anchors; boxes (cx, cy, w, h in pixels) and sigmoid scores."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    anchors = (SIDE // STRIDE) ** 2
    init = [numpy_helper.from_array(rng.standard_normal((16, 3, STRIDE, STRIDE)).astype(np.float32) * 0.1, "w0"),
            numpy_helper.from_array(rng.standard_normal((4, 16, 1, 1)).astype(np.float32) * 0.5, "wb"),
            numpy_helper.from_array(rng.standard_normal((CLASSES, 16, 1, 1)).astype(np.float32), "wc"),
            numpy_helper.from_array(np.array([16.0], np.float32), "scale"),
            numpy_helper.from_array(np.array([32.0], np.float32), "shift"),
            numpy_helper.from_array(np.array([0, 4, anchors], np.int64), "box_shape"),
            numpy_helper.from_array(np.array([0, CLASSES, anchors], np.int64), "cls_shape")]
    nodes = [helper.make_node("Conv", ["images", "w0"], ["f"], strides=[STRIDE, STRIDE]),
             helper.make_node("Relu", ["f"], ["fr"]),
             helper.make_node("Conv", ["fr", "wb"], ["b0"]), helper.make_node("Mul", ["b0", "scale"], ["b1"]),
             helper.make_node("Add", ["b1", "shift"], ["b2"]), helper.make_node("Abs", ["b2"], ["b3"]),
             helper.make_node("Reshape", ["b3", "box_shape"], ["box"]),
             helper.make_node("Conv", ["fr", "wc"], ["c0"]), helper.make_node("Sigmoid", ["c0"], ["c1"]),
             helper.make_node("Reshape", ["c1", "cls_shape"], ["cls"]),
             helper.make_node("Concat", ["box", "cls"], ["head"], axis=1)]
    out_shape = ["batch", 4 + CLASSES, anchors]
    if layout == "anchors":
        nodes[-1].output[0] = "head_c"
        nodes.append(helper.make_node("Transpose", ["head_c"], ["head"], perm=[0, 2, 1]))
        out_shape = ["batch", anchors, 4 + CLASSES]
    graph = helper.make_graph(nodes, "yolo_head",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, SIDE, SIDE])],
                              [helper.make_tensor_value_info("head", TensorProto.FLOAT, out_shape)], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("layout", ["channels", "anchors"])
def test_yolo_head_fp16_for_t4_is_gated_on_matched_boxes(tmp_path, cli_run, layout):
    from xinfer_sdk.builder import build

    model = make_yolo_head(tmp_path / "yolo.onnx", layout)
    bundle = build(str(model), "t4", "fp16", output=tmp_path / "yolo.xinfer", build_engine=False)
    acc = bundle.manifest.accuracy
    m = acc["outputs"]["head"]
    assert acc["passed"] and m["kind"] == "boxes" and "YOLO-style" in m["why"], acc
    assert "top1_agreement" not in m and m["boxes_matched"] > 0 and m["box_match"] >= 0.9, m
    code, out, _ = cli_run("inspect", str(bundle.root))
    assert code == 0 and "boxes decoded" in out
