"""TensorFlow input: a SavedModel folder or a Keras ``.keras`` / ``.h5`` file, to ONNX through tf2onnx.

Two steps, as for PyTorch:

- ``read`` (the input step) loads the model and picks one signature: ``--signature``, else
  ``serving_default`` (TF Serving's default, what ``model.export`` and ``tf.saved_model.save`` write), else
  the only one; several and none of those is an error that lists them. A Keras file is loaded with Keras
  (``safe_mode``: no deserialized lambdas) and written as a SavedModel with ``model.export`` into the build's
  scratch folder first: tf2onnx's own ``from_keras`` does not work with Keras 3, its SavedModel path does.
- ``export_step`` converts the signature with ``tf2onnx.convert.from_function``. ONNX names come from the
  signature (its input keys, its output keys), a ``None`` axis 0 becomes the dynamic ``batch`` axis, other
  ``None`` axes ``<name>_<axis>``. The result is verified like the torch export: ONNX Runtime must reproduce
  TensorFlow's outputs at the example batch and at another batch size.

tensorflow (``tensorflow-cpu`` is enough) and tf2onnx come with the ``[tensorflow]`` extra, imported here
only, at first use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xinfer_sdk._lazy import require
from xinfer_sdk.errors import ConversionError, UserError
from xinfer_sdk.shapes import check_names

from . import graph

log = logging.getLogger(__name__)

EXTRA = "tensorflow"
SERVING_DEFAULT = "serving_default"
BATCH = "batch"
MAX_REL_ERROR = 1e-3
SIGNATURE_HINT = "choose one with --signature NAME (Python: signature='NAME')"


@dataclasses.dataclass
class Signature:
    """One SavedModel signature, ready to convert: a function of keyword tensors returning a dict."""

    name: str
    fn: Any  # the signature's ConcreteFunction
    inputs: dict[str, Any]  # name -> tf.TensorSpec, in the signature's order
    outputs: list[str]
    keep: Any = None  # the loaded SavedModel object (its variables must outlive fn)


# -- the input step -------------------------------------------------------------------------------------------
def read(ctx, model) -> str:
    """Load the SavedModel (or Keras file) at ``model`` and pick the signature; fills ``ctx.tf_model``."""
    tf = _tf()
    path = Path(model)
    what = "SavedModel"
    if path.is_file():
        folder = ctx.scratch / "keras_saved_model"
        version = _keras_to_saved_model(path, folder)
        ctx.source["keras"] = version
        what = f"Keras {version} model exported to a SavedModel"
    else:
        folder = path
    try:
        with _quiet():
            loaded = tf.saved_model.load(str(folder))
    except Exception as exc:
        raise ConversionError(f"{model}: not a loadable TensorFlow SavedModel ({_first_line(exc)})",
                              hint="write it with tf.saved_model.save(obj, DIR) or keras_model.export(DIR)") from None
    sig = pick_signature(loaded.signatures, ctx.options.signature, where=str(model))
    sig.keep = loaded
    ctx.tf_model = sig
    ctx.source.update(signature=sig.name, input_names=list(sig.inputs))
    ins = ", ".join(f"{n}:{_shape_text(s.shape)} {s.dtype.name}" for n, s in sig.inputs.items())
    return f"{what}, signature {sig.name}: inputs {ins}; outputs {', '.join(sig.outputs)}"


def pick_signature(signatures: Mapping[str, Any], wanted: str | None, *, where: str) -> Signature:
    """``wanted``, else serving_default, else the only signature; otherwise an error listing them."""
    names = [n for n in signatures if not n.startswith("_")]
    if not names:
        raise ConversionError(f"{where}: the SavedModel has no signatures",
                              hint="save it with tf.saved_model.save(obj, DIR, signatures=obj.__call__."
                                   "get_concrete_function(tf.TensorSpec(...))) or keras_model.export(DIR)")
    if wanted is not None:
        if wanted not in names:
            raise UserError(f"--signature {wanted!r}: {where} has no such signature (it has: {', '.join(names)})")
        name = wanted
    elif SERVING_DEFAULT in names:
        name = SERVING_DEFAULT
    elif len(names) == 1:
        name = names[0]
    else:
        raise UserError(f"{where} has {len(names)} signatures ({', '.join(names)}) and none is "
                        f"{SERVING_DEFAULT}; {SIGNATURE_HINT}")
    fn = signatures[name]
    args, kwargs = fn.structured_input_signature
    if args:
        raise ConversionError(f"{where}: signature {name!r} takes positional inputs; SavedModel signatures "
                              "take named tensors")
    inputs = dict(kwargs)
    for key, spec in inputs.items():
        if spec.dtype.name == "string":
            raise ConversionError(f"{where}: signature {name!r} input {key!r} is a string tensor; ONNX graphs for "
                                  "xinfer-sdk take numeric inputs (preprocess text outside the model)")
    outputs = fn.structured_outputs
    if not isinstance(outputs, Mapping):
        raise ConversionError(f"{where}: signature {name!r} does not return a dict of tensors")
    return Signature(name=name, fn=fn, inputs=inputs, outputs=list(outputs))


def _keras_to_saved_model(path: Path, folder: Path) -> str:
    keras = require("keras", extra=EXTRA, purpose="reading Keras model files")
    try:
        with _quiet():
            model = keras.saving.load_model(str(path), compile=False)
    except Exception as exc:
        raise ConversionError(f"{path}: Keras cannot load it ({_first_line(exc)})",
                              hint="save it with model.save('model.keras') (Keras 3), or export a SavedModel "
                                   "with model.export(DIR) and build that folder") from None
    try:
        with _quiet():
            model.export(str(folder), format="tf_saved_model", verbose=False)
    except Exception as exc:
        raise ConversionError(f"{path}: model.export to a SavedModel failed ({_first_line(exc)})") from None
    return str(getattr(keras, "__version__", "?"))


# -- the export step ------------------------------------------------------------------------------------------
def export_step(ctx) -> tuple[str, dict[str, Any]]:
    """The signature to ONNX (tf2onnx), named and with dynamic axes, verified against TensorFlow."""
    sig: Signature = ctx.tf_model
    opts = ctx.options
    tf = _tf()
    tf2onnx = require("tf2onnx", extra=EXTRA, purpose="converting TensorFlow models to ONNX")
    if opts.input_names or opts.output_names:
        raise UserError(f"--input-names / --output-names apply to PyTorch models; a TensorFlow model's names come "
                        f"from its signature {sig.name!r} (inputs {', '.join(sig.inputs)}; outputs "
                        f"{', '.join(sig.outputs)})")
    check_names(opts.shapes, list(sig.inputs))
    opset = opts.opset or graph.EXPORT_OPSET
    example = _example(ctx, sig)
    path = ctx.scratch / "export.onnx"
    keys = list(sig.inputs)
    specs = [tf.TensorSpec(s.shape, s.dtype, name=k) for k, s in sig.inputs.items()]

    def call(*args):
        return sig.fn(**dict(zip(keys, args)))

    fn = tf.function(call, input_signature=specs, autograph=False)
    try:
        with _quiet():
            tf2onnx.convert.from_function(fn, input_signature=specs, opset=opset, output_path=str(path))
    except Exception as exc:
        raise ConversionError(f"tf2onnx could not convert signature {sig.name!r}: {type(exc).__name__}: "
                              f"{_first_line(exc)}", hint="see docs/building.md 'TensorFlow and Keras'") from None
    model = graph.load(path, what="converted model")
    axes = _name_dims(model, sig)
    graph.save(model, path)
    checks = verify(sig, path, example, axes, opts.shapes)
    ctx.raw_onnx = path
    ctx.example = example
    ctx.tools["tensorflow"] = tf.__version__
    ctx.tools["tf2onnx"] = tf2onnx.__version__
    onnx_outputs = [o.name for o in model.graph.output]
    dyn = {n: {str(a): label for a, label in ax.items()} for n, ax in axes.items() if n in sig.inputs}
    return (f"tf2onnx {tf2onnx.__version__}, opset {graph.opset(model)}, inputs {', '.join(keys)}, outputs "
            f"{', '.join(onnx_outputs)}, max relative error {max(c['max_rel_error'] for c in checks):.2g}",
            {"opset": graph.opset(model), "signature": sig.name, "dynamic_axes": dyn, "verified": checks})


def _example(ctx, sig: Signature) -> dict[str, np.ndarray]:
    """Example inputs from --calib / --shapes (as for PyTorch), else made from the signature's own shapes."""
    opts = ctx.options
    if opts.calib is not None or opts.shapes:
        from .export import _example as from_options

        got = from_options(ctx, list(sig.inputs))
        return {k: np.asarray(got[k]).astype(sig.inputs[k].dtype.as_numpy_dtype) for k in sig.inputs if k in got}
    rng = np.random.RandomState(0)
    out = {}
    for name, spec in sig.inputs.items():
        dims = list(spec.shape.as_list()) if spec.shape.rank is not None else None
        if dims is None or any(d is None for d in dims[1:]):
            raise UserError(f"signature {sig.name!r} input {name!r} has shape {_shape_text(spec.shape)}: give "
                            "example data with --calib or a shape range with --shapes NAME:MIN..OPT..MAX")
        if dims and dims[0] is None:
            dims[0] = 2
        dtype = np.dtype(spec.dtype.as_numpy_dtype)
        if dtype.kind == "f":
            out[name] = rng.rand(*dims).astype(dtype)
        elif dtype.kind == "b":
            out[name] = np.ones(dims, dtype=dtype)
        else:
            out[name] = np.zeros(dims, dtype=dtype)
    return out


def _name_dims(model, sig: Signature) -> dict[str, dict[int, str]]:
    """tf2onnx writes unk__N for every unknown dim: axis 0 of a batched signature is 'batch', others
    '<name>_<axis>'. Returns the dynamic axes by tensor name."""
    batched = all(s.shape.rank and s.shape.as_list()[0] is None for s in sig.inputs.values())
    rename: dict[str, str] = {}
    axes: dict[str, dict[int, str]] = {}
    for v in [*graph.graph_inputs(model), *model.graph.output]:
        for axis, d in enumerate(v.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            label = BATCH if axis == 0 and batched else f"{v.name}_{axis}"
            if d.dim_param:
                label = rename.setdefault(d.dim_param, label)
            d.dim_param = label
            axes.setdefault(v.name, {})[axis] = label
    graph.rename_dims(model, rename)
    return axes


# -- verification ---------------------------------------------------------------------------------------------
def verify(sig: Signature, path: Path, example: Mapping[str, np.ndarray], axes, shapes) -> list[dict[str, Any]]:
    """ONNX Runtime must reproduce TensorFlow at the example shape and at another batch size."""
    from .export import _rel_err, _varied

    ort = require("onnxruntime", purpose="verifying the conversion")
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ConversionError(f"ONNX Runtime cannot load the converted graph: {_first_line(exc)}") from None
    out_names = [o.name for o in sess.get_outputs()]
    checks = []
    for label, feeds in (("example", dict(example)), ("varied", _varied(example, axes, shapes))):
        if feeds is None:
            continue
        want = run_tf(sig, feeds)
        try:
            got = dict(zip(out_names, sess.run(None, feeds)))
        except Exception as exc:
            raise ConversionError(f"the converted ONNX graph fails at {_feeds_text(feeds)}: {_first_line(exc)}") from None
        missing = sorted(set(want) - set(got))
        if missing:
            raise ConversionError(f"the converted ONNX graph lacks output(s) {', '.join(missing)} "
                                  f"(it has {', '.join(got)})")
        err = max((_rel_err(got[k], w) for k, w in want.items()), default=0.0)
        if not err <= MAX_REL_ERROR:
            raise ConversionError(f"the converted ONNX graph does not reproduce TensorFlow at {_feeds_text(feeds)}: "
                                  f"relative error {err:.2g} (limit {MAX_REL_ERROR:g})")
        checks.append({"check": label, "shapes": {k: list(v.shape) for k, v in feeds.items()},
                       "max_rel_error": float(err)})
    return checks


def run_tf(sig: Signature, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TensorFlow's own answer for ``feeds`` (numpy in, numpy out, by output name)."""
    tf = _tf()
    try:
        out = sig.fn(**{k: tf.constant(v) for k, v in feeds.items()})
    except Exception as exc:
        raise ConversionError(f"signature {sig.name!r} fails on the example inputs ({_feeds_text(feeds)}): "
                              f"{type(exc).__name__}: {_first_line(exc)}") from None
    return {k: v.numpy() for k, v in out.items()}


# ----------------------------------------------------------------------------------------------------------
def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no C++ INFO/WARNING banner on stderr
    return require("tensorflow", extra=EXTRA, purpose="reading TensorFlow / Keras models")


@contextlib.contextmanager
def _quiet():
    """tf2onnx and Keras print progress to stdout and log at INFO/WARNING; a build keeps its own log."""
    names = ("tf2onnx", "tensorflow", "absl")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def _shape_text(shape) -> str:
    dims = shape.as_list() if shape.rank is not None else None
    return "?" if dims is None else "x".join("?" if d is None else str(d) for d in dims) or "scalar"


def _feeds_text(feeds: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in feeds.items())


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(exc).__name__
