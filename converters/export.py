"""Step 2, export: a PyTorch model to ONNX with a dynamic batch axis and the dynamic axes the user names.

nn.Module and TorchScript go through torch's TorchScript-based exporter (``dynamo=False``: it needs no
onnxscript); a ``torch.export`` program goes through the dynamo exporter (its native input), which needs
``onnxscript``. Several inputs, integer inputs and several outputs (tuples, dicts) are supported. The
export is verified: ONNX Runtime must reproduce torch's outputs at the example shape AND at a second shape
(another batch size and sequence length), which catches graphs specialized to the example.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from xinfer_sdk._lazy import require
from xinfer_sdk.errors import ConversionError, UserError
from xinfer_sdk.shapes import check_names

from . import calibration, graph
from .pipeline import Skip

log = logging.getLogger(__name__)

BATCH = "batch"
SHAPES_HINT = "give example shapes with --shapes NAME:SHAPE, one per input (e.g. NAME:1x8..32x128..64x512; add --dtype NAME=int64 " \
              "for integer inputs) or example data with --calib"


def export_step(ctx) -> tuple[str, dict[str, Any]]:
    if ctx.tf_model is not None:
        from . import tf_convert

        return tf_convert.export_step(ctx)
    if ctx.torch_model is None:
        raise Skip("the input is ONNX already")
    opts = ctx.options
    names = opts.input_names or ctx.source.get("input_names")
    example = _example(ctx, names)
    names = list(example)
    check_names(opts.shapes, names)
    axes = _dynamic_axes(ctx, example)
    opset = opts.opset or graph.EXPORT_OPSET
    torch = require("torch", purpose="exporting PyTorch models")
    signature = ctx.source.get("input_names") or names
    keywords = names != list(signature[:len(names)])  # optional arguments skipped: pass everything by name
    ref = _run_torch(ctx.torch_model, example, torch, keywords=keywords)
    out_names = opts.output_names or _output_names(ref["structure"], len(ref["values"]))
    if len(out_names) != len(ref["values"]):
        raise UserError(f"--output-names gives {len(out_names)} names but the model returns "
                        f"{len(ref['values'])} tensors")
    for name in out_names:
        axes.setdefault(name, {0: BATCH})
    path = ctx.scratch / "export.onnx"
    if ctx.source["format"] == "torch-export":
        _export_program(ctx.torch_model, path, names, out_names, opset)
    else:
        _export_module(ctx.torch_model, example, path, names, out_names, axes, opset, torch, keywords=keywords)
    model = graph.load(path, what="exported model")
    _name_dims(model, axes)
    opset = graph.opset(model)
    graph.save(model, path)
    checks = verify(ctx.torch_model, path, example, axes, opts.shapes, torch, keywords=keywords)
    ctx.raw_onnx = path
    ctx.example = example
    dyn = {n: {str(a): label for a, label in ax.items()} for n, ax in axes.items() if n in names}
    return (f"opset {opset}, inputs {', '.join(names)}, outputs {', '.join(out_names)}",
            {"opset": opset, "dynamic_axes": dyn, "verified": checks})


def fixed_batch_note(ctx) -> str:
    """One line for a graph whose batch axis is fixed; for a torch.export program, how to export it dynamic
    (torch.export.export fixes every size it is not told is dynamic, so the plain call gives max_batch_size 0)."""
    names = ctx.source.get("input_names") if ctx.source.get("format") == "torch-export" else None
    if not names:
        return ("the graph has a fixed batch dimension: requests will not be batched (max_batch_size 0); "
                "export with a dynamic batch axis to let the runtime batch")
    shapes = ", ".join(f'"{n}": {{0: batch}}' for n in names)
    return ("the torch.export program has a fixed batch size (torch.export.export fixes every size not named in "
            "dynamic_shapes), so requests will not be batched (max_batch_size 0); to batch, export it with "
            f'batch = torch.export.Dim("batch", max=1024); torch.export.export(model, args, '
            f"dynamic_shapes={{{shapes}}})")


# ----------------------------------------------------------------------------------------------------------
def _example(ctx, names: list[str] | None) -> dict[str, np.ndarray]:
    """Example inputs: from the factory / program, else the first --calib record (read as a batch; --shapes
    tells a single sample apart), else --shapes (+ --dtype). forward() arguments with a default may be left out."""
    opts = ctx.options
    if ctx.example:
        return dict(ctx.example)
    required = ctx.source.get("required_inputs") or names
    if opts.calib is not None:
        records, _ = calibration.read_records(opts.calib, input_names=names, what="--calib", limit=1)
        rec = {k: np.asarray(v) for k, v in records[0].items() if k not in ("labels", "label", "y")}
        _require(required, rec, "--calib has no data")
        rec = {n: rec[n] for n in (names or rec) if n in rec}
        out = {}
        for k, v in rec.items():
            r = opts.shapes.get(k)
            if r is not None and v.ndim == len(r.min) - 1:
                v = v[None]  # one sample
            out[k] = v[:2]
        return out
    if opts.shapes:
        _require(required, opts.shapes, "no example shape")
        order = [n for n in (names or opts.shapes) if n in opts.shapes]
        rng = np.random.RandomState(0)
        out = {}
        for n in order:
            r = opts.shapes[n]
            shape = list(r.opt)
            shape[0] = min(max(2, r.min[0]), r.max[0])  # batch 1 lets tracers specialize broadcast dims
            dtype = np.dtype(opts.dtypes.get(n, "float32"))
            out[n] = rng.randn(*shape).astype(dtype) if dtype.kind == "f" else np.ones(shape, dtype=dtype)
        return out
    known = f" for its inputs {', '.join(required)}" if required else ""
    raise UserError(f"cannot export {ctx.source.get('factory') or ctx.source.get('path') or 'the model'}: "
                    f"no example inputs{known}; {SHAPES_HINT}")


def _require(required: list[str] | None, given, what: str) -> None:
    missing = [n for n in required or () if n not in given]
    if missing:
        raise UserError(f"cannot export: {what} for input(s) {', '.join(missing)} (found: "
                        f"{', '.join(map(str, given)) or 'nothing'}); {SHAPES_HINT}")


def _dynamic_axes(ctx, example: Mapping[str, np.ndarray]) -> dict[str, dict[int, str]]:
    """Batch axis 0 everywhere; axes named with --axis; axes whose --shapes range is not fixed."""
    axes: dict[str, dict[int, str]] = {n: {0: BATCH} for n in example}
    for name, given in ctx.options.dynamic_axes.items():
        if name not in example:
            continue  # an output name: applied after export
        axes[name].update({int(a): str(label) for a, label in given.items()})
    for name, r in ctx.options.shapes.items():
        if name not in example:
            continue
        if len(r.min) != example[name].ndim:
            raise UserError(f"--shapes {name}: rank {len(r.min)} does not match the example input's rank "
                            f"{example[name].ndim} (shape {'x'.join(map(str, example[name].shape))})")
        for axis in range(1, len(r.min)):
            if r.min[axis] != r.max[axis]:
                axes[name].setdefault(axis, f"{name}_{axis}")
    for name, given in ctx.options.dynamic_axes.items():
        if name not in example:
            axes.setdefault(name, {0: BATCH}).update({int(a): str(label) for a, label in given.items()})
    return axes


def _tensors(example: Mapping[str, np.ndarray], torch) -> dict[str, Any]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in example.items()}


def _run_torch(module, example: Mapping[str, np.ndarray], torch, *, keywords: bool = False) -> dict[str, Any]:
    tensors = _tensors(example, torch)
    try:
        fn = module.module() if hasattr(module, "graph_signature") else module
        with torch.no_grad():
            out = fn(**tensors) if keywords else fn(*tensors.values())
    except Exception as exc:
        shapes = ", ".join(f"{k}:{'x'.join(map(str, v.shape))} {v.dtype}" for k, v in example.items())
        raise ConversionError(f"the model fails on the example inputs ({shapes}): {type(exc).__name__}: "
                              f"{_first_line(exc)}", hint=SHAPES_HINT) from None
    values: list[np.ndarray] = []
    _flatten(out, values)
    return {"structure": out, "values": values}


def _flatten(obj: Any, acc: list[np.ndarray]) -> None:
    if hasattr(obj, "detach"):
        acc.append(obj.detach().cpu().numpy())
    elif isinstance(obj, Mapping):
        for v in obj.values():
            _flatten(v, acc)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            _flatten(v, acc)
    else:
        raise ConversionError(f"the model returns a {type(obj).__name__}; only tensors, tuples, lists and dicts "
                              "of tensors can be exported")


def _output_names(out: Any, count: int) -> list[str]:
    if hasattr(out, "detach"):
        return ["output"]
    if isinstance(out, Mapping) and len(out) == count:
        return [str(k) for k in out]
    fields = getattr(out, "_fields", None)
    if fields and len(fields) == count:
        return list(fields)
    return [f"output_{i}" for i in range(count)]


def _export_module(module, example, path, names, out_names, axes, opset, torch, *, keywords: bool = False) -> None:
    tensors = _tensors(example, torch)
    # a trailing dict is passed as keyword arguments by the TorchScript-based exporter
    args = (tensors,) if keywords else tuple(tensors.values())
    try:
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, input_names=names,
                              output_names=out_names, dynamic_axes=axes, do_constant_folding=True)
    except Exception as exc:
        raise ConversionError(f"torch.onnx.export failed: {type(exc).__name__}: {_first_line(exc)}",
                              hint="the model uses an operation ONNX cannot express; see docs/building.md "
                                   "'When export fails'") from None


def _export_program(program, path, names, out_names, opset) -> None:
    torch = require("torch")
    require("onnxscript", extra="build", purpose="exporting torch.export (.pt2) programs")
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(program, (), dynamo=True, opset_version=max(opset, 18),
                                             input_names=names, output_names=out_names, verbose=False)
            onnx_program.save(str(path))
    except Exception as exc:
        raise ConversionError(f"exporting the torch.export program failed: {type(exc).__name__}: "
                              f"{_first_line(exc)}") from None
    finally:
        quiet.setLevel(level)


def _name_dims(model, axes: Mapping[str, Mapping[int, str]]) -> None:
    """Give every IO dim the name the user chose (the dynamo exporter writes s0, s1, ...)."""
    rename: dict[str, str] = {}
    values = {v.name: v for v in [*graph.graph_inputs(model), *model.graph.output]}
    for name, ax in axes.items():
        v = values.get(name)
        if v is None:
            continue
        dims = v.type.tensor_type.shape.dim
        for axis, label in ax.items():
            if axis < len(dims) and not dims[axis].HasField("dim_value"):
                if dims[axis].dim_param and dims[axis].dim_param != label:
                    rename.setdefault(dims[axis].dim_param, label)
                dims[axis].dim_param = label
    for v in graph.graph_inputs(model):  # torch.export's own symbols (s0, s53): name them after input and axis
        for axis, d in enumerate(v.type.tensor_type.shape.dim):
            if d.dim_param and re.fullmatch(r"s\d+", d.dim_param) and d.dim_param not in rename:
                rename[d.dim_param] = f"{v.name}_{axis}"
    if rename:
        graph.rename_dims(model, rename)


# ----------------------------------------------------------------------------------------------------------
def verify(module, path, example: Mapping[str, np.ndarray], axes, shapes, torch, *,
           keywords: bool = False) -> list[dict[str, Any]]:
    """ORT must match torch at the example shape and at a second one that exercises every dynamic axis."""
    ort = require("onnxruntime", purpose="verifying the export")
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ConversionError(f"ONNX Runtime cannot load the exported graph: {_first_line(exc)}") from None
    checks = []
    for label, feeds in (("example", dict(example)), ("varied", _varied(example, axes, shapes))):
        if feeds is None:
            continue
        try:
            want = _run_torch(module, feeds, torch, keywords=keywords)["values"]
        except ConversionError:
            if label == "example":
                raise
            continue  # the model itself does not take this shape; nothing to compare
        try:
            got = sess.run(None, feeds)
        except Exception as exc:
            raise ConversionError(_specialized(label, feeds, _first_line(exc))) from None
        err = max((_rel_err(g, w) for g, w in zip(got, want)), default=0.0)
        if err > 1e-3 or len(got) != len(want):
            raise ConversionError(_specialized(label, feeds, f"outputs differ from torch (relative error {err:.2g})"))
        checks.append({"shapes": {k: list(v.shape) for k, v in feeds.items()}, "max_rel_error": float(err)})
    return checks


def _specialized(label: str, feeds, why: str) -> str:
    shapes = ", ".join(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in feeds.items())
    if label == "example":
        return f"the exported ONNX graph does not reproduce the model at {shapes}: {why}"
    return (f"the exported ONNX graph is specialized to the example shapes: at {shapes} {why}. The model turns a "
            "tensor size into a Python number (e.g. int(x.shape[1]) or a .pt2 traced with fixed sizes); fix the "
            "axis with --shapes NAME:SHAPE or make the code shape-generic")


def _varied(example, axes, shapes) -> dict[str, np.ndarray] | None:
    """The example resized along every dynamic axis (batch 3, other axes to their --shapes min or -1/+1)."""
    sizes: dict[str, int] = {}
    out = {}
    changed = False
    for name, arr in example.items():
        shape = list(arr.shape)
        for axis, label in axes.get(name, {}).items():
            if axis >= len(shape):
                continue
            if label not in sizes:
                r = shapes.get(name)
                if axis == 0:
                    new = 3 if r is None or r.max[0] >= 3 else 1
                elif r is not None and r.min[axis] != shape[axis]:
                    new = r.min[axis]
                elif r is not None and r.max[axis] != shape[axis]:
                    new = r.max[axis]
                else:
                    new = shape[axis] + 1 if r is None else shape[axis]
                sizes[label] = new
            changed |= sizes[label] != shape[axis]
            shape[axis] = sizes[label]
        out[name] = _resize(arr, shape)
    return out if changed else None


def _resize(arr: np.ndarray, shape: list[int]) -> np.ndarray:
    """Crop or tile ``arr`` to ``shape`` (keeps integer inputs valid: ids stay ids, masks stay masks)."""
    out = arr
    for axis, n in enumerate(shape):
        have = out.shape[axis]
        if n < have:
            out = np.take(out, range(n), axis=axis)
        elif n > have:
            reps = -(-n // have)
            out = np.take(np.concatenate([out] * reps, axis=axis), range(n), axis=axis)
    return np.ascontiguousarray(out)


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return float("inf")
    if got.size == 0:
        return 0.0
    if want.dtype.kind not in "fc":
        return 0.0 if np.array_equal(got, want) else float("inf")
    scale = max(float(np.abs(want).max()), 1e-6)
    return float(np.abs(got.astype(np.float64) - want).max() / scale)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(exc).__name__
