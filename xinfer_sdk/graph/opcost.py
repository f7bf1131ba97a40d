"""Per-operator arithmetic: the FLOP count and class of one ONNX node, given its static shapes.

Counting rules (one multiply-accumulate = 2 FLOPs, as vendors count their peaks):

- Conv / QLinearConv / ConvInteger: ``2 * prod(Y) * (C_in / group) * prod(kernel)`` (+ ``prod(Y)`` for a bias).
- ConvTranspose: every input element meets ``(C_out / group) * prod(kernel)`` weights: ``2 * prod(X) * prod(W[1:])``.
- Gemm: ``2 * M * N * K`` (+ ``M * N`` with C). MatMul (batched, broadcast): ``2 * prod(Y) * K``; attention
  exported from a framework is two MatMuls (QK^T and AV) and is counted by this rule.
- Attention (ONNX opset 23, com.microsoft Attention / MultiHeadAttention): QK^T + AV
  ``= 4 * B * H * S_q * S_kv * D`` plus ``5 * B * H * S_q * S_kv`` for the softmax.
- Einsum: ``2 * prod(size of every distinct index)``. LSTM / GRU / RNN: gates x 2 x (input + hidden) x hidden
  per step and direction.
- Element-wise and the rest: a nominal count per output element (``ELEMENT_FLOPS``). These ops are
  memory-bound on every profile we ship, so their FLOP count barely moves a roofline estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Shape = tuple[int, ...]

# op class -> ops. The class decides which peak a roofline uses (matrix units vs vector units) and whether
# an element-wise op can be fused into the epilogue of the convolution / matrix product before it.
CLASSES: dict[str, frozenset[str]] = {
    "conv": frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "FusedConv", "NhwcConv"}),
    "matmul": frozenset({"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "Einsum", "Attention",
                         "MultiHeadAttention", "GroupQueryAttention", "LSTM", "GRU", "RNN", "FusedMatMul",
                         "FusedGemm", "MatMulNBits", "QGemm", "DynamicQuantizeMatMul"}),
    "normalization": frozenset({"BatchNormalization", "LayerNormalization", "InstanceNormalization",
                                "GroupNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
                                "SkipSimplifiedLayerNormalization", "RMSNormalization", "Softmax", "LogSoftmax",
                                "LpNormalization", "MeanVarianceNormalization", "Hardmax"}),
    "pooling": frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool",
                          "GlobalLpPool", "MaxRoiPool", "RoiAlign", "QLinearAveragePool",
                          "QLinearGlobalAveragePool"}),
    "reduction": frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                            "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin",
                            "CumSum", "TopK"}),
    "data": frozenset({"Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND",
                       "ScatterND", "ScatterElements", "Scatter", "Expand", "Tile", "Pad", "Resize", "Upsample",
                       "DepthToSpace", "SpaceToDepth", "Trilu", "OneHot", "NonZero", "Compress", "ReverseSequence",
                       "GridSample", "Col2Im", "CenterCropPad", "Unique", "NonMaxSuppression"}),
    # Views: engines alias the input buffer, nothing is computed or copied.
    "view": frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}),
    # Shape arithmetic: runs on the host on tiny int64 tensors (or is constant-folded at build time).
    "shape": frozenset({"Shape", "Size", "Constant", "ConstantOfShape", "Range", "EyeLike"}),
    # Q/DQ pairs are fused into the neighbouring conv/matmul by TensorRT and by ONNX Runtime's QDQ transformer.
    "quant": frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}),
    "control": frozenset({"If", "Loop", "Scan"}),
}
OP_CLASS = {op: cls for cls, ops in CLASSES.items() for op in ops}
# Classes that run on the matrix units (tensor cores, AMX/VNNI/FMA GEMM kernels).
MATRIX_CLASSES = ("conv", "matmul")

# Nominal FLOPs per output element for non-matrix ops (a documented convention, not a measurement).
TRANSCENDENTAL = frozenset({"Exp", "Log", "Sigmoid", "Tanh", "Erf", "Gelu", "FastGelu", "BiasGelu", "QuickGelu",
                            "Softplus", "Softsign", "Mish", "Pow", "Sqrt", "Sin", "Cos", "Tan", "Elu", "Selu", "Celu",
                            "HardSwish", "HardSigmoid", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Reciprocal"})
ELEMENT_FLOPS = {"transcendental": 4.0, "elementwise": 1.0, "BatchNormalization": 2.0, "InstanceNormalization": 6.0,
                 "LayerNormalization": 8.0, "SkipLayerNormalization": 9.0, "SimplifiedLayerNormalization": 6.0,
                 "SkipSimplifiedLayerNormalization": 7.0, "RMSNormalization": 6.0, "GroupNormalization": 8.0,
                 "Softmax": 5.0, "LogSoftmax": 6.0}


def op_class(op_type: str) -> str:
    return OP_CLASS.get(op_type, "elementwise")


def numel(shape: Sequence[int] | None) -> int:
    return 0 if shape is None else math.prod(shape)


def _k(attrs: dict, name: str, default):
    v = attrs.get(name)
    return default if v is None else v


def flops(op_type: str, ins: Sequence[Shape | None], outs: Sequence[Shape | None], attrs: dict) -> float:
    """FLOPs of one node (None when a shape it needs is unknown)."""
    cls = op_class(op_type)
    y = outs[0] if outs else None
    x = ins[0] if ins else None
    if cls in ("view", "shape", "quant", "control"):
        return 0.0
    if op_type in ("Conv", "ConvInteger", "FusedConv", "NhwcConv", "QLinearConv"):
        w = ins[3] if op_type == "QLinearConv" else ins[1] if len(ins) > 1 else None
        if y is None or w is None:
            return None
        bias = (len(ins) > 8 and ins[8] is not None) if op_type == "QLinearConv" else (len(ins) > 2 and ins[2] is not None)
        return 2.0 * numel(y) * numel(w[1:]) + (numel(y) if bias else 0)
    if op_type == "ConvTranspose":
        w = ins[1] if len(ins) > 1 else None
        if x is None or w is None or y is None:
            return None
        return 2.0 * numel(x) * numel(w[1:]) + (numel(y) if len(ins) > 2 and ins[2] is not None else 0)
    if op_type in ("Gemm", "FusedGemm", "QGemm"):
        if x is None or y is None:
            return None
        k = x[0] if _k(attrs, "transA", 0) else x[-1]
        has_c = len(ins) > 2 and ins[2] is not None
        return 2.0 * numel(y) * k + (numel(y) if has_c else 0)
    if op_type in ("MatMul", "MatMulInteger", "FusedMatMul", "DynamicQuantizeMatMul", "QLinearMatMul"):
        if x is None or y is None:
            return None
        if op_type == "FusedMatMul" and _k(attrs, "transA", 0):
            k = x[-2] if len(x) >= 2 else x[-1]
        else:
            k = x[-1]
        return 2.0 * max(numel(y), 1) * k
    if op_type == "MatMulNBits":
        if x is None or y is None:
            return None
        return 2.0 * numel(y) * x[-1]
    if op_type == "Einsum":
        return _einsum_flops(attrs.get("equation", ""), ins)
    if op_type in ("Attention", "MultiHeadAttention", "GroupQueryAttention"):
        return _attention_flops(op_type, ins, outs, attrs)
    if op_type in ("LSTM", "GRU", "RNN"):
        return _rnn_flops(op_type, ins, attrs)
    if cls == "pooling":
        if op_type.startswith("Global") or op_type.startswith("QLinearGlobal"):
            return float(numel(x)) if x is not None else None
        kernel = attrs.get("kernel_shape") or ()
        if y is None:
            return None
        return float(numel(y) * max(1, math.prod(kernel)))
    if cls == "reduction":
        return float(numel(x)) if x is not None else None
    if cls == "data":
        return 0.0
    if y is None:
        return None
    if op_type in ELEMENT_FLOPS:
        per = ELEMENT_FLOPS[op_type]
    elif op_type in TRANSCENDENTAL:
        per = ELEMENT_FLOPS["transcendental"]
    else:
        per = ELEMENT_FLOPS["elementwise"]
    return per * numel(y)


def _einsum_flops(equation: str, ins: Sequence[Shape | None]) -> float | None:
    lhs = equation.replace(" ", "").split("->")[0]
    terms = lhs.split(",")
    if len(terms) != len(ins) or any(s is None for s in ins) or "..." in lhs:
        # Ellipsis or unknown shapes: fall back to the product of the largest operand with the others' last dims.
        if any(s is None for s in ins):
            return None
        return 2.0 * max(numel(s) for s in ins) * max(s[-1] if s else 1 for s in ins)
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, ins):
        for letter, dim in zip(term, shape):
            sizes[letter] = max(sizes.get(letter, 1), dim)
    factor = 2.0 if len(ins) > 1 else 1.0
    return factor * math.prod(sizes.values())


def _attention_flops(op_type: str, ins: Sequence[Shape | None], outs: Sequence[Shape | None],
                     attrs: dict) -> float | None:
    q = ins[0] if ins else None
    k = ins[1] if len(ins) > 1 else None
    if q is None:
        return None
    if op_type == "Attention" and "q_num_heads" not in attrs and "num_heads" in attrs:
        # com.microsoft Attention: input [B, S, hidden], packed QKV weights [hidden, 3*hidden] (projection inside).
        b, s, hidden = q[0], q[1], q[-1]
        w = ins[1] if len(ins) > 1 else None
        proj = 2.0 * b * s * hidden * (w[-1] if w is not None else 3 * hidden)
        return proj + 4.0 * b * s * s * hidden + 5.0 * b * int(attrs["num_heads"]) * s * s
    if len(q) == 4:  # [B, H, S, D]
        b, h, sq, d = q
        skv = k[2] if k is not None and len(k) == 4 else sq
    else:  # [B, S, hidden] with the head count as an attribute
        heads = int(attrs.get("q_num_heads") or attrs.get("num_heads") or 1)
        b, sq, hidden = q[0], q[1], q[-1]
        h, d = heads, hidden // max(heads, 1)
        skv = k[1] if k is not None and len(k) == 3 else k[2] if k is not None and len(k) == 4 else sq
    return 4.0 * b * h * sq * skv * d + 5.0 * b * h * sq * skv


def _rnn_flops(op_type: str, ins: Sequence[Shape | None], attrs: dict) -> float | None:
    x = ins[0] if ins else None
    w = ins[1] if len(ins) > 1 else None
    if x is None or w is None:
        return None
    seq, batch, inp = x[0], x[1], x[2]
    if _k(attrs, "layout", 0) == 1:
        batch, seq = x[0], x[1]
    dirs, gates_hidden = w[0], w[1]
    hidden = int(attrs.get("hidden_size") or gates_hidden // {"LSTM": 4, "GRU": 3, "RNN": 1}[op_type])
    per_step = 2.0 * gates_hidden * (inp + hidden) + 4.0 * gates_hidden
    return float(seq * batch * dirs) * per_step


def gemm_shape(op_type: str, ins: Sequence[Shape | None], outs: Sequence[Shape | None],
               attrs: dict) -> tuple[int, int, int, int, int] | None:
    """(M, N, K, count, taps) of the matrix product a conv / matmul node runs: ``count`` products of M x K by
    K x N (a convolution as an implicit GEMM: M = output pixels, N = output channels per group, K = input
    channels per group x ``taps`` kernel positions, count = groups; taps = 1 for a matmul). None for other ops
    or when a shape is unknown."""
    y = outs[0] if outs else None
    x = ins[0] if ins else None
    if y is None or x is None:
        return None
    if op_type in ("Conv", "ConvInteger", "FusedConv", "QLinearConv"):
        w = ins[3] if op_type == "QLinearConv" else ins[1] if len(ins) > 1 else None
        if w is None or len(y) < 2:
            return None
        groups = int(_k(attrs, "group", 1))
        return numel(y) // max(y[1], 1), y[1] // max(groups, 1), numel(w[1:]), groups, max(1, numel(w[2:]))
    if op_type in ("Gemm", "FusedGemm", "QGemm"):
        k = x[0] if _k(attrs, "transA", 0) else x[-1]
        return (y[0] if len(y) > 1 else 1), y[-1], k, 1, 1
    if op_type in ("MatMul", "MatMulInteger", "FusedMatMul", "DynamicQuantizeMatMul", "QLinearMatMul"):
        rows = y[-2] if len(y) >= 2 else 1
        return rows, y[-1], x[-1], max(1, numel(y[:-2])), 1
    return None
