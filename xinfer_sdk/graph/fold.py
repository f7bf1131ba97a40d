"""Shape arithmetic folded to values, so that shape inference can size what it could not.

``onnx.shape_inference`` (even with data propagation) leaves a tensor unsized when its shape comes from a
computation on shapes that it does not propagate: PyTorch exports ``torch.arange(x.shape[1])`` as
``Shape -> Gather -> Cast -> Range`` and ``x.reshape(b, s, 3, h, d // h)`` as a ``Concat`` of ``Div``-ided shape
elements. Once every graph input is static, all of that is arithmetic on known numbers. This module evaluates it:

- seeds: ``Shape`` / ``Size`` of a tensor whose shape inference sized, ``Constant`` nodes and the small
  initializers left in the copy;
- every standard-domain, deterministic node whose inputs are all known is evaluated with ONNX's reference
  implementation (``onnx.reference``), the whole sub-graph at once (node by node when one op is missing there);
- the small values become initializers of a working copy and inference runs again, until nothing new is
  learned (shapes that became static can seed new ``Shape`` nodes).

The caller keeps every node: it only takes the shapes (``value_info``) learned here and the names of the folded
tensors, whose producers run on the host (shape arithmetic) and cost nothing on the device.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from .._lazy import require

log = logging.getLogger(__name__)

# A value bigger than this stays out of the working copy's initializers (only its shape is recorded).
_VALUE_MAX = 1 << 16
_ROUNDS = 4
_RANDOM = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli", "If", "Loop", "Scan"})


def static_dims(vi) -> tuple[int, ...] | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape") or not all(d.HasField("dim_value") for d in tt.shape.dim):
        return None
    return tuple(int(d.dim_value) for d in tt.shape.dim)


def sized(inferred) -> dict[str, tuple[int, ...]]:
    g = inferred.graph
    out = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = static_dims(vi)
        if dims is not None:
            out[vi.name] = dims
    for t in g.initializer:
        out[t.name] = tuple(int(d) for d in t.dims)
    return out


def unsized_outputs(inferred) -> list[str]:
    known = sized(inferred)
    return [o for n in inferred.graph.node for o in n.output if o and o not in known]


def fold_and_infer(m, infer: Callable) -> tuple[object, frozenset[str]]:
    """(shape-inferred model with every node of ``m``, names of folded tensors). ``m`` has static graph inputs;
    ``infer(model)`` runs shape inference."""
    onnx = require("onnx", purpose="reading ONNX graphs")
    inferred = infer(m)
    if not unsized_outputs(inferred):
        return inferred, frozenset()
    values: dict = {}
    work = inferred
    for _ in range(_ROUNDS):
        new = _evaluate(m, sized(work), values)
        if not new:
            break
        values.update(new)
        work = infer(_with_values(m, values))
        if not unsized_outputs(work):
            break
    if not values:
        return inferred, frozenset()
    # every node of m, with the shapes learned on the working copy and those of the folded values
    out = onnx.ModelProto()
    out.CopyFrom(m)
    del out.graph.value_info[:]
    have = {i.name for i in out.graph.input} | {t.name for t in out.graph.initializer}
    outputs = {o.name for o in out.graph.output}
    learned = {vi.name: vi for vi in work.graph.value_info}
    for name, vi in learned.items():
        if name not in have and name not in outputs:
            out.graph.value_info.append(vi)
    for name, v in values.items():
        if name not in learned and name not in have and name not in outputs:
            out.graph.value_info.append(onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)))
    by_name = {o.name: o for o in work.graph.output}
    for o in out.graph.output:
        if o.name in by_name:
            o.CopyFrom(by_name[o.name])
    return out, frozenset(values)


def _evaluate(m, shapes: dict[str, tuple[int, ...]], known: dict) -> dict:
    """Values of the nodes of ``m`` computable from shapes and constants, not yet in ``known``."""
    onnx = require("onnx")
    np = require("numpy")
    numpy_helper = onnx.numpy_helper
    g = m.graph
    seeds = dict(known)
    for t in g.initializer:
        if t.name not in seeds:
            seeds[t.name] = numpy_helper.to_array(t)
    nodes = []
    have = set(seeds)
    for n in g.node:
        if n.domain not in ("", "ai.onnx") or n.op_type in _RANDOM or all(o in have for o in n.output if o):
            continue
        if n.op_type in ("Shape", "Size") and n.input and n.input[0] in shapes:
            dims = shapes[n.input[0]]
            for o in n.output:
                if o:
                    seeds[o] = _shape_value(np, n, dims)
                    have.add(o)
            continue
        if any(o in shapes and math.prod(shapes[o]) > _VALUE_MAX for o in n.output if o):
            continue  # already sized, and too big to be shape arithmetic (a weight transform, a mask)
        if all((not i) or i in have for i in n.input):
            nodes.append(n)
            have.update(o for o in n.output if o)
    inits = {t.name for t in g.initializer}
    new = {k: v for k, v in seeds.items() if k not in known and k not in inits}
    new.update((k, v) for k, v in _run(onnx, m, nodes, seeds).items() if k not in known)
    return {k: np.asarray(v) for k, v in new.items() if np.asarray(v).size <= _VALUE_MAX}


def _shape_value(np, node, dims: tuple[int, ...]):
    if node.op_type == "Size":
        return np.array(int(np.prod(dims, dtype=np.int64)), dtype=np.int64)
    start, end = 0, len(dims)
    for a in node.attribute:
        if a.name == "start":
            start = a.i
        elif a.name == "end":
            end = a.i
    return np.array(dims[slice(start, end)], dtype=np.int64)


def _run(onnx, m, nodes, seeds: dict) -> dict:
    """Outputs of ``nodes`` given ``seeds``: the sub-graph at once, else node by node (skipping what fails)."""
    if not nodes:
        return {}
    try:
        return _run_graph(onnx, m, nodes, seeds)
    except Exception as exc:  # an op the reference implementation lacks, or a bad value: go node by node
        log.debug("graphcost fold: sub-graph evaluation failed (%s); node by node", exc)
    vals = dict(seeds)
    out = {}
    for n in nodes:
        if not all((not i) or i in vals for i in n.input):
            continue
        try:
            got = _run_graph(onnx, m, [n], {i: vals[i] for i in n.input if i})
        except Exception as exc:
            log.debug("graphcost fold: %s (%s) not evaluated: %s", n.name, n.op_type, exc)
            continue
        vals.update(got)
        out.update(got)
    return out


def _run_graph(onnx, m, nodes, seeds: dict) -> dict:
    from onnx.reference import ReferenceEvaluator

    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    used = {i for n in nodes for i in n.input if i}
    produced = [o for n in nodes for o in n.output if o]
    np = require("numpy")
    inits = [numpy_helper.from_array(np.asarray(seeds[k]), k) for k in used if k in seeds and k not in set(produced)]
    outs = [helper.make_tensor_value_info(o, 0, None) for o in produced]
    g = helper.make_graph(list(nodes), "fold", [], outs, inits)
    sub = helper.make_model(g, opset_imports=list(m.opset_import))
    sub.ir_version = m.ir_version
    res = ReferenceEvaluator(sub).run(None, {})
    return dict(zip(produced, res))


def _with_values(m, values: dict):
    """A copy of ``m`` in which the folded tensors are initializers and the nodes that made them are gone."""
    onnx = require("onnx")
    w = onnx.ModelProto()
    w.CopyFrom(m)
    outputs = {o.name for o in w.graph.output}
    keep = [n for n in w.graph.node
            if not (n.output and all((not o) or (o in values and o not in outputs) for o in n.output))]
    del w.graph.node[:]
    w.graph.node.extend(keep)
    del w.graph.value_info[:]
    have = {t.name for t in w.graph.initializer} | {i.name for i in w.graph.input}
    w.graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in values.items()
                               if k not in have and k not in outputs)
    return w
