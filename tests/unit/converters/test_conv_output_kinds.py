"""The gate knows what an output is (issue 16 item 1): the kind picks the metric; ties and bit-exact never fail."""

from __future__ import annotations

import numpy as np
import pytest
from xinfer_sdk.converters import kinds
from xinfer_sdk.converters.accuracy import compare

from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.errors import UserError

TH = {"min_cosine": 0.999, "min_top1_agreement": 0.999, "max_abs_error": None, "max_accuracy_drop": 0.01}


def _one(ref, got, name="y", th=TH, kind=None):
    rep = compare([[ref]], [[got]], [name], labels=None, thresholds=th, kinds={name: kind} if kind else None)
    return rep, rep["outputs"][name]


def test_saturated_probability_map_is_a_map_not_top1_over_pixels():
    # DBNet's [N, 1, H, W] map: rows saturated at 1.0 flip their argmax on a 1e-7 change; that is not a disagreement
    ref = np.zeros((4, 1, 32, 32), np.float32)
    ref[:, :, 8:24, 4:28] = 1.0
    got = ref.copy()
    got[:, :, 8:24, 4:28] -= np.random.RandomState(0).rand(4, 1, 16, 24).astype(np.float32) * 1e-6
    rep, m = _one(ref, got)
    assert m["kind"] == "map" and "top1_agreement" not in m and m["mask_iou"] == 1.0
    assert rep["passed"], rep["failures"]


def test_map_whose_mask_moves_fails_on_iou():
    ref = np.zeros((2, 1, 32, 32), np.float32)
    ref[:, :, 8:24, 8:24] = 0.9
    got = ref.copy()
    got[:, :, 8:24, 8:16] = 0.1  # half the text region lost
    rep, m = _one(ref, got, th={**TH, "min_cosine": 0.0})
    assert m["mask_iou"] == pytest.approx(0.5)
    assert not rep["passed"] and "IoU of the mask thresholded at 0.5 is 0.5000" in rep["failures"][0]


def test_tied_classes_agree_whichever_is_picked():
    ref = np.array([[1.0, 1.0, 0.0], [0.2, 0.8, 0.0]], np.float32)  # row 0: two classes saturated at 1.0
    got = np.array([[0.9999999, 1.0, 0.0], [0.2, 0.8, 0.0]], np.float32)
    ref[0, 0] = 1.0
    got_flipped = np.array([[1.0, 0.9999999, 0.0], [0.2, 0.8, 0.0]], np.float32)
    for candidate in (got, got_flipped):
        rep, m = _one(ref, candidate, kind=("class", "test"))
        assert m["top1_agreement"] == 1.0 and rep["passed"]


def test_a_real_class_flip_still_fails():
    ref = np.array([[0.9, 0.1], [0.3, 0.7]], np.float32)
    got = np.array([[0.1, 0.9], [0.3, 0.7]], np.float32)
    rep, m = _one(ref, got, th={**TH, "min_cosine": 0.0})
    assert m["kind"] == "class" and m["top1_agreement"] == 0.5
    assert any("top-1 agreement 0.5000" in f for f in rep["failures"])


def test_sequence_is_top1_per_step():
    rng = np.random.RandomState(1)
    ref = rng.rand(2, 5, 7).astype(np.float32)
    got = ref.copy()
    got[0, 0] = got[0, 0][::-1]  # one step of ten reversed
    rep, m = _one(ref, got, th={**TH, "min_cosine": 0.0}, kind=("sequence", "given with --output-kind"))
    assert m["top1_rows"] == 10 and m["top1_agreement"] == pytest.approx(0.9)
    assert "top-1 agreement per step 0.9000" in rep["failures"][0]


def _yolo_head(n=2, classes=3, anchors=400, seed=0):
    rng = np.random.RandomState(seed)
    head = np.zeros((n, 4 + classes, anchors), np.float32)
    head[:, 0:2] = rng.rand(n, 2, anchors) * 600
    head[:, 2:4] = 20 + rng.rand(n, 2, anchors) * 40
    head[:, 4:] = rng.rand(n, classes, anchors) * 0.2
    for b in range(n):  # five confident, well separated objects per image
        for k in range(5):
            head[b, 0:4, k] = [60 + 110 * k, 100 + 50 * b, 50, 50]
            head[b, 4 + k % classes, k] = 0.9
    return head


def test_detection_head_boxes_are_decoded_and_matched():
    ref = _yolo_head()
    assert kinds.from_shape(ref.shape)[0] == "boxes"
    noisy = ref + np.random.RandomState(2).randn(*ref.shape).astype(np.float32) * 1e-3
    rep, m = _one(ref, noisy)
    assert "top1_agreement" not in m and m["box_match"] == 1.0 and m["boxes_matched"] == 10, m
    moved = ref.copy()
    moved[0, 0, 0] += 60  # one object's box moves by more than its width
    rep, m = _one(ref, moved, th={**TH, "min_cosine": 0.0})
    assert m["boxes_missed"] == 1 and m["boxes_extra"] == 1 and not rep["passed"]
    assert "boxes matched" in rep["failures"][0]
    rep, m = _one(np.swapaxes(ref, 1, 2), np.swapaxes(noisy, 1, 2))  # [N, anchors, 4+C]
    assert m["boxes_layout"] == "[N, anchors, 4+C]" and m["box_match"] == 1.0


def test_bit_exact_output_never_fails():
    ref = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
    rep, m = _one(ref, ref.copy(), th={**TH, "min_cosine": 1.5, "min_top1_agreement": 1.5})
    assert m["bit_exact"] and rep["passed"] and m["metric"].startswith("bit-exact")


def _graph(last_op, out_shape, **attrs):
    from onnx import TensorProto, helper

    nodes = [helper.make_node(last_op, ["x"], ["y"], **attrs)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, out_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("op, shape, attrs, kind", [
    ("Softmax", [-1, -1, 6625], {"axis": 2}, "sequence"),  # CRNN per-step scores
    ("Softmax", [-1, 2], {"axis": 1}, "class"),
    ("Sigmoid", [-1, 1, -1, -1], {}, "map"),  # DBNet
    ("Sigmoid", [-1, 1], {}, "raw"),  # one probability per sample (VAD)
    ("LpNormalization", [-1, 512], {}, "embedding"),
])
def test_kind_inferred_from_the_graph(op, shape, attrs, kind):
    spec = TensorSpec("y", "float32", tuple(shape))
    got, why = kinds.infer(_graph(op, [d if d > 0 else None for d in shape], **attrs), [spec])["y"]
    assert got == kind and op in why


def test_yolo_concat_of_boxes_and_sigmoid_scores_is_boxes():
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Sigmoid", ["cls"], ["p"]), helper.make_node("Concat", ["box", "p"], ["y"], axis=1)]
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "g", [vi("box", TensorProto.FLOAT, [None, 4, 8400]),
                                       vi("cls", TensorProto.FLOAT, [None, 80, 8400])],
                          [vi("y", TensorProto.FLOAT, [None, 84, 8400])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    kind, why = kinds.infer(model, [TensorSpec("y", "float32", (-1, 84, 8400))])["y"]
    assert kind == "boxes" and "YOLO" in why


def test_user_kind_wins_and_bad_kinds_are_named():
    spec = TensorSpec("y", "float32", (-1, 10))
    assert kinds.infer(None, [spec], {"y": "embedding"})["y"] == ("embedding", "given with --output-kind")
    with pytest.raises(UserError, match="unknown kind 'mask'; expected one of class, sequence, map"):
        kinds.parse_kinds([("y", "mask")])
    with pytest.raises(UserError, match="the model has no output 'z'; its outputs are y"):
        kinds.check_names({"z": "map"}, ["y"])


def test_an_output_batched_on_axis_1_is_compared_per_sample():
    rng = np.random.RandomState(3)
    ref = rng.randn(2, 4, 8).astype(np.float32)  # a recurrent state [2, batch, 128]-like: batch on axis 1
    got = ref.copy()
    got[:, 2] = -got[:, 2]  # one sample's state negated
    rep = compare([[ref]], [[got]], ["stateN"], labels=None, thresholds={**TH, "min_cosine": 0.0},
                  kinds={"stateN": ("raw", "test")}, axes={"stateN": 1})
    assert rep["outputs"]["stateN"]["min_sample_cosine"] == pytest.approx(-1.0)
