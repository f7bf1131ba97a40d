"""The per-node pass of ``xinfer_sdk.graph.analyze``: FLOPs, bytes at stored precision, epilogue fusion, operand
layouts, and the peak of live activation memory, in one walk over a shape-inferred graph."""

from __future__ import annotations

import dataclasses
from typing import Any

from .._lazy import require
from . import opcost as _opcost
from .kernels import plan_kernels
from .result import ModelCost, OpCost
from .shapes import init_numel

# ONNX TensorProto element type -> (bytes per element, precision name used by the profiles)
_TYPES: dict[int, tuple[float, str]] = {
    1: (4, "fp32"), 2: (1, "int8"), 3: (1, "int8"), 4: (2, "int16"), 5: (2, "int16"), 6: (4, "int32"),
    7: (8, "int64"), 8: (0, "string"), 9: (1, "bool"), 10: (2, "fp16"), 11: (8, "fp64"), 12: (4, "int32"),
    13: (8, "int64"), 14: (8, "complex"), 15: (16, "complex"), 16: (2, "bf16"), 17: (1, "fp8"), 18: (1, "fp8"),
    19: (1, "fp8"), 20: (1, "fp8"), 21: (0.5, "int4"), 22: (0.5, "int4"), 23: (0.5, "fp4"), 24: (1, "fp8"),
    25: (0.25, "int2"), 26: (0.25, "int2"), 27: (0.75, "fp6"), 28: (0.75, "fp6"),
}
# Compute precision of a float activation type (what a matrix op runs in when nothing is quantized).
_COMPUTE = {"fp32": "fp32", "fp64": "fp32", "fp16": "fp16", "bf16": "bf16", "int8": "int8", "fp8": "fp8",
            "int4": "int8"}


def _attrs(node) -> dict[str, Any]:
    onnx = require("onnx")
    out = {}
    for a in node.attribute:
        try:
            out[a.name] = onnx.helper.get_attribute_value(a)
        except Exception:
            continue
        if isinstance(out[a.name], bytes):
            out[a.name] = out[a.name].decode("utf-8", "replace")
    return out


class Walk:
    """One topological pass: per-node cost, precision, fusion and the live-memory peak."""

    def __init__(self, proto, inferred, input_shapes, batched, folded=frozenset()):
        self.proto, self.g = proto, inferred.graph
        self.input_shapes, self.batched = input_shapes, batched
        self.folded = frozenset(folded)  # tensors computed from shapes alone (``fold``): host shape arithmetic
        self.shape: dict[str, tuple[int, ...] | None] = {}
        self.dtype: dict[str, int] = {}
        for vi in list(self.g.input) + list(self.g.value_info) + list(self.g.output):
            tt = vi.type.tensor_type
            if tt.elem_type:
                self.dtype[vi.name] = tt.elem_type
            if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                self.shape[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
        self.inits = {t.name: t for t in proto.graph.initializer}
        for t in proto.graph.initializer:
            self.shape[t.name] = tuple(int(d) for d in t.dims)
            self.dtype[t.name] = t.data_type
        self.nodes = list(self.g.node)
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.graph_outputs = {o.name for o in self.g.output}
        self.constants = set(self.inits)
        for n in self.nodes:  # Constant nodes and anything computed only from constants (shape sub-graphs)
            if n.op_type == "Constant" or (n.input and all((not i) or i in self.constants for i in n.input)):
                self.constants.update(o for o in n.output if o)

    # -- sizes -----------------------------------------------------------------------------------------
    def size(self, name: str) -> tuple[float, str]:
        return _TYPES.get(self.dtype.get(name, 1), (4, "fp32"))

    def stored(self, name: str) -> tuple[str, int, float]:
        """(storage tensor, elements, bytes): a DequantizeLinear output is stored at its quantized input."""
        src = name
        p = self.producer.get(name)
        if p is not None and p.op_type == "DequantizeLinear" and p.input:
            src = p.input[0]
        n = _opcost.numel(self.shape.get(src)) if self.shape.get(src) is not None else 0
        return src, n, n * self.size(src)[0]

    def out_bytes(self, name: str, elements: int) -> float:
        """Bytes written for ``name``: at the quantized size when every reader is a QuantizeLinear."""
        readers = self.consumers.get(name, [])
        if readers and all(r.op_type == "QuantizeLinear" for r in readers):
            return elements * self.size(readers[0].output[0])[0]
        return elements * self.size(name)[0]

    def precision(self, node) -> str:
        if node.op_type in ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm",
                            "DynamicQuantizeMatMul"):
            return "int8"
        first = node.input[0] if node.input else ""
        p = self.producer.get(first)
        if p is not None and p.op_type == "DequantizeLinear" and p.input:
            return _COMPUTE.get(self.size(p.input[0])[1], "fp32")
        t = node.output[0] if node.output else first
        return _COMPUTE.get(self.size(t)[1], "fp32")

    # -- the pass --------------------------------------------------------------------------------------
    def run(self) -> ModelCost:
        ops: list[OpCost] = []
        unknown: list[str] = []
        notes: list[str] = []
        fused_from: dict[str, bool] = {}  # tensor -> produced by a matrix op or its fused epilogue chain
        for idx, n in enumerate(self.nodes):
            name = n.name or f"{n.op_type}_{idx}"
            cls = _opcost.op_class(n.op_type)
            if n.domain not in ("", "ai.onnx", "com.microsoft", "ai.onnx.ml"):
                cls = "other"
            ins = [self.shape.get(i) if i else None for i in n.input]
            outs = [self.shape.get(o) if o else None for o in n.output]
            if cls == "control":
                notes.append(f"{name}: {n.op_type} body is not counted (control flow)")
            if n.output and all(o in self.constants for o in n.output if o) and cls != "quant":
                cls = "shape"  # folded at build time
            elif n.output and all(o in self.folded for o in n.output if o) and cls not in ("quant", "view"):
                cls = "shape"  # computed from input shapes: host arithmetic (a shape tensor in TensorRT)
            fl = _opcost.flops(n.op_type, ins, outs, _attrs(n)) if cls not in ("shape",) else 0.0
            known = fl is not None and all(s is not None for s, o in zip(outs, n.output) if o)
            if not known and cls not in ("shape", "quant", "view"):
                unknown.append(f"{name} ({n.op_type})")
            act_in, w_in, read_b, w_b = 0, 0, 0.0, 0.0
            for i in n.input:
                if not i:
                    continue
                src, elems, b = self.stored(i)
                if i in self.constants or src in self.constants:
                    w_in += elems
                    w_b += b
                else:
                    act_in += elems
                    read_b += b
            out_e = sum(_opcost.numel(self.shape.get(o)) for o in n.output if o and self.shape.get(o) is not None)
            write_b = sum(self.out_bytes(o, _opcost.numel(self.shape.get(o))) for o in n.output
                          if o and self.shape.get(o) is not None)
            fused = cls in ("view", "shape", "quant")
            if cls in _opcost.MATRIX_CLASSES:
                for o in n.output:
                    fused_from[o] = True
            elif _fusable(n):
                # inputs computed in this epilogue: made by a conv/matmul (or its fused element-wise ops) and read
                # only by fusable element-wise ops, so they never go to memory (GELU's x/sqrt2, erf, +1, *x, *0.5)
                local = [i for i in n.input if i and fused_from.get(i) and i not in self.graph_outputs
                         and all(_fusable(c) for c in self.consumers.get(i, []))]
                if local:
                    fused = True
                    # the epilogue reads only its other activation inputs (a residual); writes nothing extra
                    read_b = sum(self.stored(i)[2] for i in n.input if i and i not in local and i not in self.constants)
                    write_b = 0.0
                    for o in n.output:
                        fused_from[o] = True
            elif n.op_type in _GATHERS and n.input and n.input[0] in self.constants:
                # an embedding lookup reads the rows it gathers, not the whole table
                w_b = min(w_b, out_e * self.size(n.input[0])[0])
            if fused and cls in ("view", "shape", "quant"):
                read_b = w_b = write_b = 0.0
                if cls == "view":
                    for o in n.output:
                        fused_from[o] = fused_from.get(n.input[0], False) if n.input else False
            if cls == "quant" and n.op_type == "QuantizeLinear" and n.input and fused_from.get(n.input[0]):
                for o in n.output:
                    fused_from[o] = False
            gemm = _opcost.gemm_shape(n.op_type, ins, outs, _attrs(n)) if cls in _opcost.MATRIX_CLASSES else None
            ops.append(OpCost(name=name, op_type=n.op_type, op_class=cls, flops=float(fl or 0.0), read_bytes=read_b,
                              weight_bytes=w_b, write_bytes=write_b, precision=self.precision(n), in_elements=act_in,
                              weight_elements=w_in, out_elements=out_e, fused=fused, known=known, gemm=gemm))
        self._absorb_layout(ops)
        self._fix_chain_writes(ops)
        kernel, attention, edges = plan_kernels(
            self.nodes, ops, constants=self.constants, graph_inputs=list(self.input_shapes),
            graph_outputs=self.graph_outputs, elements=lambda t: _opcost.numel(self.shape.get(t)),
            itemsize=lambda t: self.size(t)[0])
        ops = [dataclasses.replace(o, kernel=kk, attention=a) for o, kk, a in zip(ops, kernel, attention)]
        return self._totals(ops, unknown, notes, edges)

    def _absorb_layout(self, ops: list[OpCost]) -> None:
        """Transposes and splits whose results only feed matrix ops (through views and other such ops) become
        operand layouts of those GEMMs (transposed / strided operands in cuBLAS, TensorRT and MLAS): no pass."""
        index = {id(n): k for k, n in enumerate(self.nodes)}
        absorbed: set[int] = set()

        def feeds_gemm(t: str) -> bool:
            readers = self.consumers.get(t, [])
            if not readers or t in self.graph_outputs:
                return False
            for r in readers:
                k = index[id(r)]
                cls = ops[k].op_class
                if cls in _opcost.MATRIX_CLASSES or k in absorbed:
                    continue
                if cls == "view" and r.output and feeds_gemm(r.output[0]):
                    continue
                return False
            return True

        for k in range(len(self.nodes) - 1, -1, -1):
            n = self.nodes[k]
            if n.op_type in _LAYOUT and all(feeds_gemm(o) for o in n.output if o):
                absorbed.add(k)
                ops[k] = dataclasses.replace(ops[k], fused=True, read_bytes=0.0, weight_bytes=0.0, write_bytes=0.0)

    def _fix_chain_writes(self, ops: list[OpCost]) -> None:
        """A matrix op whose epilogue chain ends in a QuantizeLinear writes at the quantized size."""
        index = {id(n): k for k, n in enumerate(self.nodes)}
        for k, n in enumerate(self.nodes):
            if ops[k].op_class not in _opcost.MATRIX_CLASSES or not n.output:
                continue
            t = n.output[0]
            while True:
                readers = self.consumers.get(t, [])
                if len(readers) != 1 or not ops[index[id(readers[0])]].fused or readers[0].op_type == "QuantizeLinear":
                    break
                t = readers[0].output[0]
            elems = _opcost.numel(self.shape.get(t)) if self.shape.get(t) is not None else 0
            if elems:
                ops[k] = dataclasses.replace(ops[k], write_bytes=self.out_bytes(t, elems))

    def _totals(self, ops: list[OpCost], unknown: list[str], notes: list[str], edges=()) -> ModelCost:
        param_count, param_bytes = 0, 0.0
        use = self._weight_use(ops)
        by_use = {"matrix": 0.0, "other": 0.0, "int": 0.0}
        for t in self.proto.graph.initializer:
            k = init_numel(t)
            param_count += k
            nbytes = k * _TYPES.get(t.data_type, (4, ""))[0]
            param_bytes += nbytes
            kind = "int" if t.data_type in (2, 3, 4, 5, 6, 7, 12, 13, 9) and t.name not in use else use.get(t.name, "other")
            by_use[kind] += nbytes
        for n in self.proto.graph.node:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value" and a.t.data_type not in (6, 7):  # not int32/int64 shape constants
                        k = init_numel(a.t)
                        param_count += k
                        param_bytes += k * _TYPES.get(a.t.data_type, (4, ""))[0]
                        by_use["other"] += k * _TYPES.get(a.t.data_type, (4, ""))[0]
        in_b = sum(_opcost.numel(s) * self.size(n)[0] for n, s in self.input_shapes.items())
        out_shapes = {o.name: self.shape[o.name] for o in self.g.output if self.shape.get(o.name) is not None}
        out_b = sum(_opcost.numel(s) * self.size(n)[0] for n, s in out_shapes.items())
        matrix = [o for o in ops if o.op_class in _opcost.MATRIX_CLASSES]
        weight = {}
        for o in matrix:
            weight[o.precision] = weight.get(o.precision, 0.0) + o.flops
        precision = max(weight, key=weight.get) if weight else self._float_type()
        batch = next(iter(self.input_shapes.values()))[0] if self.batched and self.input_shapes else 1
        return ModelCost(batch_size=batch, batched=self.batched, input_shapes=dict(self.input_shapes),
                         output_shapes=out_shapes, flops=sum(o.flops for o in ops), param_bytes=param_bytes,
                         param_count=param_count, activation_bytes=self._peak_live(), io_bytes=in_b + out_b,
                         input_bytes=in_b, output_bytes=out_b, precision=precision, ops=tuple(ops),
                         unknown=tuple(unknown), notes=tuple(notes), param_bytes_by_use=by_use, edges=tuple(edges))

    def _weight_use(self, ops: list[OpCost]) -> dict[str, str]:
        """initializer -> 'matrix' when a conv/matmul reads it (directly, or through Identity / DequantizeLinear /
        Transpose / Reshape / Cast of constants), else 'other' for what other ops read."""
        roots: dict[str, set[str]] = {}  # constant tensor -> the initializers it is computed from
        for n in self.nodes:
            if n.output and all(o in self.constants for o in n.output if o):
                src: set[str] = set()
                for i in n.input:
                    src |= roots.get(i, {i} if i in self.inits else set())
                for o in n.output:
                    if o:
                        roots[o] = src
        use: dict[str, str] = {}
        for n, op in zip(self.nodes, ops):
            if op.op_class in ("shape", "view", "quant"):
                continue
            for i in n.input:
                for r in roots.get(i, {i} if i in self.inits else set()):
                    if op.op_class in _opcost.MATRIX_CLASSES:
                        use[r] = "matrix"
                    else:
                        use.setdefault(r, "other")
        return use

    def _float_type(self) -> str:
        for i in self.input_shapes:
            p = _COMPUTE.get(self.size(i)[1])
            if p:
                return p
        return "fp32"

    def _peak_live(self) -> float:
        """Peak of live non-constant tensor bytes walking nodes in order (views alias their input)."""
        root: dict[str, str] = {}
        for n in self.nodes:
            if _opcost.op_class(n.op_type) == "view" and n.input and n.input[0]:
                for o in n.output:
                    if o:
                        root[o] = root.get(n.input[0], n.input[0])
        last: dict[str, int] = {}
        end = len(self.nodes)
        for k, n in enumerate(self.nodes):
            for i in n.input:
                if i and i not in self.constants:
                    r = root.get(i, i)
                    last[r] = max(last.get(r, -1), k)
        for o in self.graph_outputs:
            last[root.get(o, o)] = end

        def nbytes(t: str) -> float:
            s = self.shape.get(t)
            return 0.0 if s is None else _opcost.numel(s) * self.size(t)[0]

        live = sum(nbytes(i) for i in self.input_shapes)
        peak = live
        for i in self.input_shapes:
            if i not in last:
                live -= nbytes(i)
        for k, n in enumerate(self.nodes):
            new = [o for o in n.output if o and o not in root and o not in self.constants]
            live += sum(nbytes(o) for o in new)
            peak = max(peak, live)
            dead = {root.get(i, i) for i in n.input if i and i not in self.constants and last.get(root.get(i, i)) == k}
            dead |= {o for o in new if o not in last}
            live -= sum(nbytes(t) for t in dead)
        return peak


_GATHERS = frozenset({"Gather", "GatherElements", "GatherND"})
_LAYOUT = frozenset({"Transpose", "Split"})


def _fusable(node) -> bool:
    """An element-wise op an engine can run in the epilogue of the conv/matmul before it."""
    return _opcost.op_class(node.op_type) in ("elementwise", "normalization") and node.op_type not in _UNFUSABLE \
        and node.domain in ("", "ai.onnx", "com.microsoft")


# Normalizations that need a whole row/channel reduced before they can write: engines do not fuse these
# into a GEMM epilogue (BatchNormalization is folded into the conv weights instead, hence fusable).
_UNFUSABLE = frozenset({"Softmax", "LogSoftmax", "LayerNormalization", "SkipLayerNormalization", "GroupNormalization",
                        "InstanceNormalization", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization",
                        "RMSNormalization", "LpNormalization", "MeanVarianceNormalization", "Hardmax", "Where",
                        "Cast"})
