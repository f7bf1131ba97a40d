"""ResNet-50 (torchvision layout) and BERT-Large (seq 384) as ONNX graphs built with onnx.helper, for the planner.

The planner reads shapes only, so the weights are not materialised: every initializer is declared with its
dims and type and marked as external data in a file that is never written (``onnx.load(...,
load_external_data=False)`` and the graph analysis never read it). Building both takes well under a second
and a few MB, instead of exporting 25 M / 335 M random weights.

ResNet-50: torchvision ``resnet50`` as ``torch.onnx.export`` writes it in eval mode with constant folding
(BatchNormalization folded into each Conv's bias): conv1 7x7/2 -> MaxPool 3x3/2 -> bottlenecks [3, 4, 6, 3]
(1x1, 3x3 stride on the 3x3 as in torchvision v1.5, 1x1 x4; projection shortcut on each stage's first block)
-> GlobalAveragePool -> Flatten -> Gemm 2048x1000. 4.1 GMACs per 224x224 image.

BERT-Large: 24 layers, hidden 1024, 16 heads of 64, intermediate 4096, vocabulary 30522, as the Hugging Face
``BertModel`` exports it (opset 17): embeddings (word + position + token type, LayerNormalization), per layer
Q/K/V MatMul + bias, Reshape/Transpose to heads, MatMul(Q, K^T) / sqrt(64) + mask -> Softmax -> MatMul(., V),
output projection + residual + LayerNormalization, GELU (erf form) feed-forward + residual + LayerNormalization;
plus the SQuAD span head (MatMul 1024x2), as in the MLPerf BERT benchmark.
"""

from __future__ import annotations

import itertools

F = 1  # TensorProto.FLOAT
I64 = 7  # TensorProto.INT64


def _weight(helper, onnx, name: str, dims, dtype: int = F):
    t = onnx.TensorProto()
    t.name, t.data_type = name, dtype
    t.dims.extend(int(d) for d in dims)
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", "weights-not-materialised.bin"), ("offset", "0"), ("length", "0")):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def resnet50():
    """torchvision ResNet-50 (BN folded), input [batch, 3, 224, 224] -> [batch, 1000]."""
    import onnx
    from onnx import helper

    nodes, inits, ids = [], [], itertools.count()

    def conv(x, cin, cout, k, stride=1, relu=True):
        i = next(ids)
        w, b, y = f"conv{i}.w", f"conv{i}.b", f"conv{i}"
        inits.extend([_weight(helper, onnx, w, (cout, cin, k, k)), _weight(helper, onnx, b, (cout,))])
        nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[k // 2] * 4))
        if relu:
            nodes.append(helper.make_node("Relu", [y], [y + ".relu"]))
            return y + ".relu"
        return y

    x = conv("input", 3, 64, 7, 2)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = "pool", 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        for blk in range(blocks):
            stride = 2 if blk == 0 and stage > 0 else 1
            h = conv(x, cin, width, 1)
            h = conv(h, width, width, 3, stride)
            h = conv(h, width, width * 4, 1, relu=False)
            short = conv(x, cin, width * 4, 1, stride, relu=False) if blk == 0 else x
            out = f"add{next(ids)}"
            nodes += [helper.make_node("Add", [h, short], [out]), helper.make_node("Relu", [out], [out + ".relu"])]
            x, cin = out + ".relu", width * 4
    inits += [_weight(helper, onnx, "fc.w", (1000, 2048)), _weight(helper, onnx, "fc.b", (1000,))]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["output"], transB=1)]
    g = helper.make_graph(nodes, "resnet50", [helper.make_tensor_value_info("input", F, ["batch", 3, 224, 224])],
                          [helper.make_tensor_value_info("output", F, ["batch", 1000])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def bert_large(seq: int = 384, layers: int = 24, hidden: int = 1024, heads: int = 16, inter: int = 4096,
               vocab: int = 30522):
    """BERT-Large encoder + SQuAD head; inputs input_ids / attention_mask / token_type_ids [batch, seq] (int64)."""
    import onnx
    from onnx import helper

    nodes, inits = [], []
    hd = hidden // heads

    def const(name, values):
        inits.append(helper.make_tensor(name, I64, [len(values)], values))
        return name

    def scalar(name, value):
        inits.append(helper.make_tensor(name, F, [], [value]))
        return name

    def w(name, *dims):
        inits.append(_weight(helper, onnx, name, dims))
        return name

    def linear(x, name, cin, cout):
        nodes.append(helper.make_node("MatMul", [x, w(name + ".w", cin, cout)], [name + ".mm"]))
        nodes.append(helper.make_node("Add", [name + ".mm", w(name + ".b", cout)], [name]))
        return name

    def layernorm(x, name):
        nodes.append(helper.make_node("LayerNormalization", [x, w(name + ".g", hidden), w(name + ".beta", hidden)],
                                      [name], axis=-1, epsilon=1e-12))
        return name

    heads_shape = const("heads_shape", [0, 0, heads, hd])
    merge_shape = const("merge_shape", [0, 0, hidden])
    scale = scalar("scale", float(hd) ** 0.5)
    one, half, sqrt2 = scalar("one", 1.0), scalar("half", 0.5), scalar("sqrt2", 2.0 ** 0.5)
    # embeddings
    nodes += [helper.make_node("Gather", [w("emb.word", vocab, hidden), "input_ids"], ["e.word"]),
              helper.make_node("Gather", [w("emb.type", 2, hidden), "token_type_ids"], ["e.type"]),
              helper.make_node("Add", ["e.word", "e.type"], ["e.sum"]),
              helper.make_node("Add", ["e.sum", w("emb.pos", seq, hidden)], ["e.all"])]
    x = layernorm("e.all", "e.ln")
    # mask: (1 - mask) * -10000, broadcast over heads and query positions
    nodes += [helper.make_node("Unsqueeze", ["attention_mask", const("axes12", [1, 2])], ["m.u"]),
              helper.make_node("Cast", ["m.u"], ["m.f"], to=F),
              helper.make_node("Sub", [one, "m.f"], ["m.inv"]),
              helper.make_node("Mul", ["m.inv", scalar("neg", -10000.0)], ["mask"])]
    for i in range(layers):
        p = f"l{i}"
        qkv = []
        for part in ("q", "k", "v"):
            t = linear(x, f"{p}.{part}", hidden, hidden)
            nodes.append(helper.make_node("Reshape", [t, heads_shape], [t + ".h"]))
            perm = [0, 2, 3, 1] if part == "k" else [0, 2, 1, 3]
            nodes.append(helper.make_node("Transpose", [t + ".h"], [t + ".t"], perm=perm))
            qkv.append(t + ".t")
        q, k, v = qkv
        nodes += [helper.make_node("MatMul", [q, k], [p + ".s"]),
                  helper.make_node("Div", [p + ".s", scale], [p + ".ss"]),
                  helper.make_node("Add", [p + ".ss", "mask"], [p + ".sm"]),
                  helper.make_node("Softmax", [p + ".sm"], [p + ".p"], axis=-1),
                  helper.make_node("MatMul", [p + ".p", v], [p + ".ctx"]),
                  helper.make_node("Transpose", [p + ".ctx"], [p + ".ctx.t"], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", [p + ".ctx.t", merge_shape], [p + ".ctx.m"])]
        o = linear(p + ".ctx.m", p + ".o", hidden, hidden)
        nodes.append(helper.make_node("Add", [o, x], [p + ".res1"]))
        x1 = layernorm(p + ".res1", p + ".ln1")
        f = linear(x1, p + ".ff1", hidden, inter)
        nodes += [helper.make_node("Div", [f, sqrt2], [f + ".d"]), helper.make_node("Erf", [f + ".d"], [f + ".e"]),
                  helper.make_node("Add", [f + ".e", one], [f + ".a"]), helper.make_node("Mul", [f, f + ".a"], [f + ".m"]),
                  helper.make_node("Mul", [f + ".m", half], [f + ".gelu"])]
        f2 = linear(f + ".gelu", p + ".ff2", inter, hidden)
        nodes.append(helper.make_node("Add", [f2, x1], [p + ".res2"]))
        x = layernorm(p + ".res2", p + ".ln2")
    linear(x, "logits", hidden, 2)
    ins = [helper.make_tensor_value_info(n, I64, ["batch", seq]) for n in ("input_ids", "attention_mask", "token_type_ids")]
    g = helper.make_graph(nodes, "bert_large", ins, [helper.make_tensor_value_info("logits", F, ["batch", seq, 2])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m
