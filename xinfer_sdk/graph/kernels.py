"""Which ops an engine that fuses like TensorRT runs as one kernel, and which tensors cross between kernels.

Rules (what TensorRT's builder does with an ONNX graph; NVIDIA TensorRT Developer Guide, "Layer Fusion" and
"Explicit Quantization"):

- a convolution / matrix product starts a kernel; its epilogue (bias, folded BatchNormalization, activation,
  residual add, scale) runs in it: the ops ``walk`` marks ``fused`` join the kernel of their producer;
- point-wise chains run as one kernel: an element-wise / normalization / reduction op joins the point-wise
  kernel of its input when every reader of that input is such an op (a decomposed LayerNorm, GELU on its own,
  a softmax with its scale and mask);
- views, shape arithmetic, Q/DQ nodes and operand layouts run nowhere: Q/DQ fold into their neighbours
  (the neighbour reads and writes the quantized tensor), views alias their input;
- attention: ``MatMul(Q, K^T) -> [scale, mask] -> Softmax -> MatMul(., V)`` is marked as one pattern
  (``OpCost.attention``); a device with fused multi-head attention kernels runs it as one kernel, so the
  S x S score tensor never leaves the chip (the device model decides, per GPU);
- everything else (data movement, pooling, custom ops) is a kernel of its own.

The result: per op, its kernel (index of the kernel's first op, -1 for ops that run nowhere), and the list of
tensors crossing kernel boundaries with their element counts (``Edge``), from which a device model prices
DRAM traffic (and decides which of those tensors stay in the on-chip L2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .result import Edge, OpCost

FREE = ("view", "shape", "quant")
POINTWISE = ("elementwise", "normalization", "reduction")
MATRIX = ("conv", "matmul")


class _Groups:
    """Union-find over op indices; a group knows whether it holds a matrix op."""

    def __init__(self, n: int):
        self.parent = list(range(n))
        self.matrix = [False] * n

    def find(self, k: int) -> int:
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = min(ra, rb), max(ra, rb)
            self.parent[hi] = lo
            self.matrix[lo] = self.matrix[lo] or self.matrix[hi]


def plan_kernels(nodes: Sequence, ops: Sequence[OpCost], *, constants: set[str],
                 graph_inputs: Sequence[str], graph_outputs: set[str],
                 elements: Callable[[str], int], itemsize: Callable[[str], float]
                 ) -> tuple[list[int], list[int], tuple[Edge, ...]]:
    """(kernel per op, attention pattern per op, edges). ``elements(t)``, ``itemsize(t)``: element count and stored
    bytes per element of tensor t."""
    n = len(nodes)
    free = [ops[k].op_class in FREE or (ops[k].fused and ops[k].op_class == "data") for k in range(n)]
    root: dict[str, str] = {}  # a view / Q-DQ output aliases the tensor it was made from
    maker: dict[str, int] = {}  # root tensor -> the op (not free) that writes it
    for k, nd in enumerate(nodes):
        if free[k]:
            src = next((i for i in nd.input if i and i not in constants), None)
            for o in nd.output:
                if o and src is not None:
                    root[o] = root.get(src, src)
        else:
            for o in nd.output:
                if o:
                    maker[o] = k

    def rt(t: str) -> str:
        return root.get(t, t)

    readers: dict[str, list[int]] = {}  # root tensor -> ops (not free) that read it, through aliases
    for k, nd in enumerate(nodes):
        if free[k]:
            continue
        for i in dict.fromkeys(i for i in nd.input if i and i not in constants):
            readers.setdefault(rt(i), []).append(k)

    g = _Groups(n)
    for k, nd in enumerate(nodes):
        cls = ops[k].op_class
        if free[k]:
            continue
        if cls in MATRIX:
            g.matrix[k] = True
            continue
        ins = [rt(i) for i in nd.input if i and i not in constants]
        if ops[k].fused:  # an epilogue op of the conv/matmul before it (walk decided)
            src = next((maker[t] for t in ins if t in maker and g.matrix[g.find(maker[t])]), None)
            if src is not None:
                g.union(src, k)
                continue
        if cls not in POINTWISE:
            continue
        for t in ins:
            p = maker.get(t)
            if p is None or g.matrix[g.find(p)] or ops[p].op_class not in POINTWISE or t in graph_outputs:
                continue
            if all(ops[r].op_class in POINTWISE for r in readers.get(t, ())):
                g.union(p, k)

    kernel = [-1 if free[k] else g.find(k) for k in range(n)]
    attention = _attention(nodes, ops, kernel, maker, rt, constants)
    out_roots = {rt(o) for o in graph_outputs}
    edges = []
    for t in dict.fromkeys(list(graph_inputs) + list(maker)):
        prod = kernel[maker[t]] if t in maker else -1
        cons = sorted({kernel[r] for r in readers.get(t, ())} - {prod})
        if t in out_roots:
            cons.append(-1)
        if cons and (prod != -1 or any(c != -1 for c in cons)):
            edges.append(Edge(name=t, elements=int(elements(t)), producer=prod, consumers=tuple(cons),
                              itemsize=float(itemsize(t))))
    return kernel, attention, tuple(edges)


def _attention(nodes, ops, kernel, maker, rt, constants) -> list[int]:
    """Ops of each ``MatMul(Q, K^T) -> ... Softmax -> MatMul(., V)`` pattern, marked with the first MatMul's
    index: the kernels of both products and of the softmax chain between them."""
    n = len(nodes)
    att = [-1] * n

    def act_act(k: int) -> bool:
        nd = nodes[k]
        return ops[k].op_class == "matmul" and nd.op_type in ("MatMul", "FusedMatMul") \
            and len([i for i in nd.input[:2] if i and i not in constants]) == 2

    members: dict[int, list[int]] = {}
    for k in range(n):
        if kernel[k] >= 0:
            members.setdefault(kernel[k], []).append(k)
    for k2 in range(n):
        if not act_act(k2):
            continue
        for t in (rt(i) for i in nodes[k2].input[:2] if i):
            s = maker.get(t)
            if s is None:
                continue
            soft = kernel[s]
            group = members.get(soft, [])
            if soft == kernel[k2] or not any(nodes[j].op_type in ("Softmax", "LogSoftmax") for j in group):
                continue
            firsts = {kernel[maker[rt(i)]] for j in group for i in nodes[j].input
                      if i and i not in constants and rt(i) in maker and kernel[maker[rt(i)]] != soft}
            k1 = next((f for f in sorted(firsts) if any(act_act(j) for j in members.get(f, []))), None)
            if k1 is None:
                continue
            mm1 = min(j for j in members[k1] if act_act(j))
            for grp in (k1, soft, kernel[k2]):
                for j in members.get(grp, []):
                    att[j] = mm1
    return att
