"""Step 1, the input: what the user handed over, read safely.

Accepted: an ONNX file (or ``onnx.ModelProto``); a TorchScript archive (``.pt``, ``torch.jit.save``); a
``torch.export`` program (``.pt2``, ``torch.export.save``); ``module:factory`` or ``path/file.py:factory``
(a function returning an ``nn.Module``, or ``(module, example_inputs)``), with ``--weights`` for a
state_dict; an ``nn.Module`` object through the Python API; a TensorFlow SavedModel folder or a Keras
``.keras`` / ``.h5`` file (converted by ``converters/tf_convert.py``, the ``[tensorflow]`` extra).

Never unpickled: a ``.pt`` written by ``torch.save(model)`` is a pickle, and loading one runs arbitrary
code. It is refused with what to export instead. State dicts are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

from xinfer_sdk._lazy import require
from xinfer_sdk.bundle import sha256_file
from xinfer_sdk.errors import ConversionError

from . import graph

log = logging.getLogger(__name__)

ONNX_SUFFIXES = (".onnx",)
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")
EXPORT_SUFFIXES = (".pt2",)
TF_SUFFIXES = (".keras", ".h5")

PICKLE_HINT = ("export it instead: torch.jit.script(model).save('model.pt'), or "
               "torch.export.save(torch.export.export(model, example_args, dynamic_shapes={'x': {0: "
               "torch.export.Dim('batch', max=1024)}}), 'model.pt2') (x: forward()'s input; without dynamic_shapes "
               "the batch size is fixed), or pass "
               "'your_module:make_model' (a function returning the module) with --weights state_dict.pt")


def detect_format(model: Any) -> str:
    """onnx | onnx-proto | torchscript | torch-export | torch-module | factory | tensorflow."""
    if _is_instance(model, "onnx", "ModelProto"):
        return "onnx-proto"
    if _is_instance(model, "torch.export", "ExportedProgram"):
        return "torch-export"
    if _is_instance(model, "torch.jit", "ScriptModule"):
        return "torchscript"
    if _is_instance(model, "torch.nn", "Module"):
        return "torch-module"
    if not isinstance(model, (str, os.PathLike)):
        raise ConversionError(f"cannot build from a {type(model).__name__}; pass a model file path, "
                              "'module:factory', a torch.nn.Module or an onnx.ModelProto")
    text = os.fspath(model)
    path = Path(text)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "tensorflow"
        raise ConversionError(f"{text!r} is a folder but not a TensorFlow SavedModel (no saved_model.pb); "
                              "pass a model file")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in ONNX_SUFFIXES:
            return "onnx"
        if suffix in EXPORT_SUFFIXES:
            return "torch-export"
        if suffix in TORCHSCRIPT_SUFFIXES:
            return "torchscript"
        if suffix in TF_SUFFIXES:
            return "tensorflow"
        if zipfile.is_zipfile(path):
            return "torchscript"
        return "onnx"  # anything else is tried as ONNX, which says clearly when it is not
    module, sep, attr = text.rpartition(":")
    if sep and module and attr.isidentifier() and not attr.startswith("\\"):
        return "factory"
    raise ConversionError(f"no model at {text!r} (not a file, and not 'module:factory')")


def _is_instance(obj: Any, module: str, name: str) -> bool:
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return cls is not None and isinstance(obj, cls)


# ----------------------------------------------------------------------------------------------------------
def load_step(ctx) -> tuple[str, dict[str, Any]]:
    """The pipeline step: fills ctx.source and either ctx.raw_onnx or ctx.torch_model (+ ctx.example)."""
    model = ctx.options.model
    fmt = detect_format(model)
    ctx.source = {"format": fmt}
    if isinstance(model, (str, os.PathLike)) and fmt != "factory":
        path = Path(model)
        ctx.source.update(path=str(path.resolve()))
        if path.is_file():
            ctx.source.update(sha256=sha256_file(path), bytes=path.stat().st_size)
    reader = _READERS[fmt]
    message = reader(ctx, model)
    return message, {"format": fmt}


def _read_onnx(ctx, model) -> str:
    m = graph.load(model, what="ONNX model")
    ctx.raw_onnx = Path(model)
    return f"ONNX opset {graph.opset(m)}, {len(m.graph.node)} nodes"


def _read_onnx_proto(ctx, model) -> str:
    path = ctx.scratch / "input.onnx"
    graph.save(model, path)
    ctx.raw_onnx = path
    ctx.source["sha256"] = sha256_file(path)
    return f"ONNX opset {graph.opset(model)}, {len(model.graph.node)} nodes (in memory)"


def _read_torchscript(ctx, model) -> str:
    torch = require("torch", purpose="reading TorchScript models")
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        _refuse_pickle(path)
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ConversionError(f"{path}: not a loadable TorchScript archive ({_first_line(exc)})",
                                  hint=PICKLE_HINT) from None
    else:
        module = model
    ctx.torch_model = module.eval()
    ctx.source["input_names"] = _script_input_names(module)
    return "TorchScript module"


def _refuse_pickle(path: Path) -> None:
    """torch.save() output (a pickle, zipped or legacy) is refused before anything reads it."""
    if not zipfile.is_zipfile(path):
        raise ConversionError(f"{path} is not a TorchScript archive (a legacy torch.save pickle or another "
                              "format); xinfer-sdk never unpickles model files", hint=PICKLE_HINT)
    names = zipfile.ZipFile(path).namelist()
    is_script = any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)
    if not is_script:
        raise ConversionError(f"{path} is a pickled PyTorch object (torch.save of a model or state_dict), not "
                              "TorchScript; xinfer-sdk never unpickles model files (that can run any code)",
                              hint=PICKLE_HINT)


def _script_input_names(module) -> list[str] | None:
    try:
        return [a.name for a in module.forward.schema.arguments[1:]]
    except (AttributeError, RuntimeError):
        return None


def _read_export(ctx, model) -> str:
    torch = require("torch", purpose="reading torch.export programs")
    if isinstance(model, (str, os.PathLike)):
        try:
            program = torch.export.load(str(model))
        except Exception as exc:
            raise ConversionError(f"{model}: not a loadable torch.export program ({_first_line(exc)})",
                                  hint="write it with torch.export.save(torch.export.export(model, args, "
                                       "dynamic_shapes={'x': {0: torch.export.Dim('batch', max=1024)}}), "
                                       "'model.pt2')") from None
    else:
        program = model
    ctx.torch_model = program
    names = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    ctx.source["input_names"] = names
    args, kwargs = program.example_inputs or ((), {})
    if args and not kwargs and len(args) == len(names):
        ctx.example = {n: a.detach().cpu().numpy() for n, a in zip(names, args)}
    return f"torch.export program, inputs {', '.join(names)}"


def _read_module(ctx, model) -> str:
    ctx.torch_model = model.eval()
    ctx.source["input_names"] = forward_input_names(model)
    ctx.source["required_inputs"] = forward_input_names(model, required=True)
    return f"torch.nn.Module {type(model).__name__}"


def _read_factory(ctx, model) -> str:
    torch = require("torch", purpose="building a model from module:factory")
    text = os.fspath(model)
    module_name, _, attr = text.rpartition(":")
    factory = getattr(_import(module_name), attr, None)
    if factory is None or not callable(factory):
        raise ConversionError(f"{text}: {module_name!r} has no callable {attr!r}")
    try:
        made = factory()
    except Exception as exc:
        raise ConversionError(f"{text}: the factory raised {type(exc).__name__}: {_first_line(exc)}") from None
    example = None
    if isinstance(made, tuple) and len(made) == 2:
        made, example = made
    if not isinstance(made, torch.nn.Module):
        raise ConversionError(f"{text}: the factory returned a {type(made).__name__}, expected a torch.nn.Module "
                              "(or a (module, example_inputs) pair)")
    if ctx.options.weights:
        _load_weights(made, ctx.options.weights)
        ctx.source["weights"] = {"path": str(Path(ctx.options.weights).resolve()),
                                 "sha256": sha256_file(ctx.options.weights)}
    ctx.torch_model = made.eval()
    names = forward_input_names(made)
    ctx.source.update(factory=text, input_names=names, required_inputs=forward_input_names(made, required=True))
    if example is not None:
        ctx.example = _example_dict(example, names, text)
    return f"{type(made).__name__} from {text}"


def _read_tensorflow(ctx, model) -> str:
    from . import tf_convert

    return tf_convert.read(ctx, model)


_READERS = {"onnx": _read_onnx, "onnx-proto": _read_onnx_proto, "torchscript": _read_torchscript,
            "torch-export": _read_export, "torch-module": _read_module, "factory": _read_factory,
            "tensorflow": _read_tensorflow}


# ----------------------------------------------------------------------------------------------------------
def _import(module_name: str):
    """Import 'pkg.mod' or a file 'path/to/file.py' (the user's own code, as `uvicorn app:factory` does)."""
    try:
        if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise ConversionError(f"no Python file {module_name!r}")
            spec = importlib.util.spec_from_file_location(f"_xinfer_user_{path.stem}", path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod
            spec.loader.exec_module(mod)
            return mod
        return importlib.import_module(module_name)
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(f"cannot import {module_name!r}: {type(exc).__name__}: {_first_line(exc)}",
                              hint="check the module path (PYTHONPATH) or pass path/to/file.py:factory") from None


def _load_weights(module, path: str) -> None:
    torch = require("torch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConversionError(f"--weights {path}: not a plain state_dict readable with weights_only=True "
                              f"({_first_line(exc)})", hint="save it with torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except Exception as exc:
        raise ConversionError(f"--weights {path} does not fit the module: {_first_line(exc)}") from None


def forward_input_names(module, *, required: bool = False) -> list[str] | None:
    """forward()'s argument names (``required``: only those without a default, e.g. a Hugging Face model's
    input_ids but not its optional token_type_ids)."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
             and not (required and p.default is not p.empty)]
    return names or None


def _example_dict(example: Any, names: list[str] | None, where: str) -> dict[str, Any]:
    import numpy as np

    def arr(x):
        return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)

    if isinstance(example, dict):
        return {str(k): arr(v) for k, v in example.items()}
    if not isinstance(example, (tuple, list)):
        example = (example,)
    if names is None or len(names) < len(example):
        names = [f"input_{i}" for i in range(len(example))] if len(example) > 1 else ["input"]
    return {n: arr(v) for n, v in zip(names, example)}


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__
