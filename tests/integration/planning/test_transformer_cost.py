"""The example transformer (``examples/models.py``, exported as the demo does) is costed in full: every node
sized, FLOPs equal to a hand count; and a CPU bundle plans at the sequence length its build recorded."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from xinfer_sdk.graph import analyze  # noqa: E402
from xinfer_sdk.shapes import parse_shapes  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
# the encoder's defaults (examples/models.py TinyEncoder): width, heads, layers, classes
D, H, L, CLASSES = 32, 2, 2, 4


@pytest.fixture(scope="module")
def example_transformer(tmp_path_factory) -> Path:
    sys.path.insert(0, str(EXAMPLES))
    try:
        from models import transformer_onnx
    finally:
        sys.path.remove(str(EXAMPLES))
    return transformer_onnx(tmp_path_factory.mktemp("example-transformer")).onnx


def hand_matrix_flops(s: int) -> int:
    """2 FLOPs per multiply-accumulate: per layer the QKV, output and two feed-forward projections, then
    QK^T and AV per head; the classifier head on the pooled vector."""
    dh = D // H
    per_layer = 2 * s * D * 3 * D + 2 * s * D * D + 2 * s * D * 4 * D + 2 * s * 4 * D * D
    attention = 2 * H * s * s * dh * 2
    return L * (per_layer + attention) + 2 * D * CLASSES


def hand_flops(s: int) -> int:
    """Matrix FLOPs plus the element-wise ops at the documented per-element counts (docs/planning.md, opcost):
    LayerNorm 8, Softmax 5, Erf 4, other element-wise 1."""
    per_layer = (2 * 8 * s * D  # two LayerNorms
                 + 5 * H * s * s + 2 * H * s * s  # softmax; scale and mask bias
                 + (1 + 4 + 1 + 1 + 1) * s * 4 * D  # GELU: x / sqrt2, erf, + 1, * x, * 0.5
                 + 2 * s * D  # two residual adds
                 + (3 * D + D + 4 * D + D) * s)  # the projections' biases
    return hand_matrix_flops(s) + L * per_layer + 8 * s * D + s * D  # final LayerNorm, token + position add


def test_every_node_of_the_example_transformer_is_costed(example_transformer):
    cost = analyze(example_transformer, batch_size=1, shapes=parse_shapes("input_ids:1x128,attention_mask:1x128"),
                   which="opt")
    assert cost.unknown == ()
    assert cost.uncosted_warning() is None


def test_example_transformer_flops_match_the_hand_count(example_transformer):
    for s in (16, 128):
        cost = analyze(example_transformer, batch_size=1,
                       shapes=parse_shapes(f"input_ids:1x{s},attention_mask:1x{s}"), which="opt")
        matrix = sum(o.flops for o in cost.ops if o.op_class in ("conv", "matmul"))
        # the attention products (two activation operands each) are in the count
        assert sum(1 for o in cost.ops if o.op_type == "MatMul" and o.gemm and o.gemm[3] == H) == 2 * L
        assert matrix == pytest.approx(hand_matrix_flops(s), rel=0.01), s
        assert cost.flops == pytest.approx(hand_flops(s), rel=0.05), s


def test_a_cpu_bundle_plans_at_the_sequence_length_its_build_recorded(example_transformer, tmp_path):
    from xinfer_sdk import build
    from xinfer_sdk.planning import plan

    bundle = build(example_transformer, "cpu", "fp32", shapes="input_ids:1x8..1x48..1x96,attention_mask:1x8..1x48..1x96",
                   output=tmp_path / "t.xinfer", build_engine=False)
    assert bundle.manifest.engine_plan is None  # a CPU bundle: the shapes are only in its build record
    result = plan(bundle.root, profiles="cpu", p99="50ms", sim_requests=2000, screen=500)
    curve = result.plans[0].curve
    assert curve.base.input_shapes == {"input_ids": (1, 48), "attention_mask": (1, 48)}
    assert any("shapes recorded in the bundle" in n for n in result.notes)
    assert result.warnings == []
