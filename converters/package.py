"""Step 8, the bundle: copy the graphs and engines into the folder, checksum them, write xinfer.yaml.

The bundle is assembled in a hidden staging folder beside the output and moved into place at the end, so
an interrupted build never leaves half a bundle where a good one was.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

from xinfer_sdk.bundle import Manifest, StepResult, is_bundle, register, save_manifest
from xinfer_sdk.errors import UserError

from . import graph

log = logging.getLogger(__name__)

MODEL = "model.onnx"
REFERENCE = "reference.onnx"
ENGINES = "engines"
_TOOLS = ("numpy", "onnx", "onnxruntime", "onnxslim", "torch", "onnxscript", "tensorrt", "pyyaml")


def check_output(out: Path) -> None:
    """Refuse to overwrite something that is not a bundle (an old bundle is replaced at the end)."""
    if out.exists() and not is_bundle(out) and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"output {str(out)!r} exists and is not a bundle; xinfer-sdk will not overwrite it",
                        hint="choose another -o DIR or remove it")


def staging_dir(out: Path) -> Path:
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    return stage


def tool_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    from xinfer_sdk import __version__

    tools = {"xinfer-sdk": __version__, "python": platform.python_version()}
    for name in _TOOLS:
        module = "yaml" if name == "pyyaml" else name
        if module in sys.modules:
            try:
                tools[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                tools[name] = getattr(sys.modules[module], "__version__", "unknown")
    tools.update(extra or {})
    return tools


def _copy_graph(src: Path, root: Path, rel: str, manifest: Manifest, *, role: str, meta: dict[str, Any]) -> None:
    files = graph.files_of(src)
    if len(files) == 1:
        shutil.copyfile(files[0], root / rel)
    else:  # external weights: re-save so the .onnx names its new neighbour "<rel>.data" as the location
        graph.save(graph.load(src), root / rel)
    register(root, manifest, rel, role=role, meta=meta)
    if (root / (rel + ".data")).exists():
        register(root, manifest, rel + ".data", role=role + "_data")


def write(ctx, steps: list[StepResult]) -> Manifest:
    """Fill ctx.staging with the artifacts and the manifest; returns the manifest (not yet moved)."""
    opts = ctx.options
    root = ctx.staging
    manifest = Manifest(
        name=opts.name, inputs=ctx.inputs, outputs=ctx.outputs, precision=opts.precision,
        max_batch_size=opts.max_batch_size if ctx.batched else 0,
        profile={"name": ctx.profile.name, "resolved": ctx.profile.to_dict()}, batch=opts.batch.to_dict(),
        source=ctx.source, calibration=ctx.calibration, accuracy=ctx.accuracy, engine_plan=ctx.engine_plan,
        steps=list(steps), tools=tool_versions(ctx.tools),
        extra={"build": build_record(ctx), "memory_budget": ctx.budget, "warnings": list(ctx.warnings)},
        padding=getattr(ctx, "padding", None),  # checked by converters/padding.py
    )
    deploy = ctx.model_onnx or ctx.fp32_onnx
    if deploy is not None:
        _copy_graph(deploy, root, MODEL, manifest, role="model", meta={"precision": opts.precision})
    if ctx.model_onnx is not None and ctx.fp32_onnx is not None and ctx.model_onnx != ctx.fp32_onnx:
        _copy_graph(ctx.fp32_onnx, root, REFERENCE, manifest, role="reference", meta={"precision": "fp32"})
    _torch_twin(ctx, root, manifest)
    for eng in ctx.engines:
        src = Path(eng["path"])
        rel = f"{ENGINES}/{src.name}"
        if src.resolve() != (root / rel).resolve():
            (root / ENGINES).mkdir(exist_ok=True)
            shutil.copyfile(src, root / rel)
        register(root, manifest, rel, role=eng["role"], meta=eng.get("meta") or {})
    save_manifest(root, manifest)
    return manifest


def _torch_twin(ctx, root: Path, manifest: Manifest) -> None:
    """Keep the PyTorch model beside the ONNX graph (FP32) so the runtime's torch backend can run the bundle:
    a TorchScript or .pt2 input is copied as is; a module is traced into TorchScript with the export example."""
    fmt = ctx.source.get("format")
    path = ctx.source.get("path")
    try:
        if fmt == "torchscript" and path:
            shutil.copyfile(path, root / "model.ts")
            register(root, manifest, "model.ts", role="torchscript")
        elif fmt == "torch-export" and path:
            shutil.copyfile(path, root / "model.pt2")
            register(root, manifest, "model.pt2", role="exported_program")
        elif ctx.torch_model is not None and ctx.example and fmt in ("torch-module", "factory"):
            import torch

            args = tuple(torch.from_numpy(ctx.example[t.name]) for t in ctx.inputs if t.name in ctx.example)
            with torch.no_grad():
                traced = torch.jit.trace(ctx.torch_model, args, check_trace=False)
            torch.jit.save(traced, str(root / "model.ts"))
            register(root, manifest, "model.ts", role="torchscript")
    except Exception as exc:  # optional: the ONNX graph is the deployable artifact
        ctx.warnings.append(f"no TorchScript twin in the bundle (the torch backend cannot run it): {exc}")
        manifest.extra["warnings"] = list(ctx.warnings)


def build_record(ctx) -> dict[str, Any]:
    """How the build was asked for, enough to rerun it (``reproduce`` is the equivalent command line)."""
    opts = ctx.options
    rec: dict[str, Any] = {
        "profile": ctx.profile.name, "precision": opts.precision, "max_batch_size": opts.max_batch_size,
        "shapes": {k: v.to_dict() for k, v in opts.shapes.items()},
        "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in opts.dynamic_axes.items()},
        "calib_method": opts.calib_method if opts.precision in ("int8", "fp8") else None,
        "thresholds": dataclasses.asdict(opts.thresholds),
    }
    src = ctx.source.get("factory") or ctx.source.get("path")
    if src:
        parts = ["xinfer-sdk", "build", str(src), "--profile", ctx.profile.name, "--precision", opts.precision,
                 "--max-batch-size", str(opts.max_batch_size)]
        if opts.shapes:
            parts += ["--shapes", ",".join(f"{k}:{v.text()}" for k, v in opts.shapes.items())]
        if opts.signature:
            parts += ["--signature", opts.signature]
        for key, value in (("--calib", opts.calib), ("--eval", opts.eval)):
            if isinstance(value, (str, os.PathLike)):
                parts += [key, os.fspath(value)]
        rec["reproduce"] = " ".join(parts)
    return rec


def publish(staging: Path, out: Path) -> Path:
    """Move the staged bundle to ``out``, replacing an older bundle there."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out
