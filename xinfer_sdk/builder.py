"""``xs.build()``: compile a model for a hardware profile into a bundle (``xinfer-sdk build`` calls this).

    import xinfer_sdk as xs
    bundle = xs.build("model.onnx", profile="t4", precision="int8", calib="calib.npz")
    bundle.manifest.accuracy["passed"]

The steps (``xinfer_sdk.converters``) run in order: input, export, cleanup, memory budget, FP16 / INT8,
accuracy gate, TensorRT; each is recorded in the manifest as ok / failed / skipped. Everything that needs
no GPU runs anywhere; the TensorRT engine is built only where TensorRT and a GPU are present, otherwise
its build plan is recorded and the target compiles it on first load.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .bundle import BUNDLE_SUFFIX, Bundle, StepResult, open_bundle
from .errors import AccuracyGateError, UserError
from .policy import BatchPolicy
from .profiles import BUILDABLE_PRECISIONS, Profile, ProfileRegistry, Thresholds, detect, load_profile
from .shapes import ShapeRange, parse_shapes

log = logging.getLogger(__name__)

__all__ = ["build", "resolve_build_profile", "resolve_precision", "default_output"]


def build(model: Any, profile: str | Profile = "auto", precision: str = "auto", *, calib: Any = None,
          eval: Any = None, shapes: str | Sequence[str] | Mapping[str, Any] | None = None,
          output: str | os.PathLike[str] | None = None, profiles_dirs: Sequence[str] = (),
          overrides: Iterable[str] = (), thresholds: Thresholds | Mapping[str, Any] | None = None,
          calib_method: str | None = None, calib_samples: int | None = None, max_batch_size: int | None = None,
          name: str | None = None, progress: Callable[[int, int, str], None] | None = None,
          dynamic_axes: Mapping[str, Mapping[int, str]] | None = None, dtypes: Mapping[str, str] | None = None,
          input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
          weights: str | None = None, opset: int | None = None, per_channel: bool | None = None,
          eval_fraction: float | None = None, labels_output: str | None = None,
          fp16_block_ops: Sequence[str] = (), build_engine: bool = True, signature: str | None = None,
          on_step: Callable[[StepResult], None] | None = None,
          padding: str | os.PathLike[str] | Mapping[str, Any] | None = None,
          output_kinds: Mapping[str, str] | None = None) -> Bundle:
    """Build ``model`` for ``profile`` at ``precision`` into a bundle folder and return it (opened, verified).

    padding: padded batching to check on the eval data and record in the manifest, as ``--pad`` takes it: a
        mapping ({"inputs": {"input_ids": {"axis": 1, "value": 0}}, "buckets": [16, 32, 64], "outputs":
        {"logits": 1}}), an inline YAML string, or a YAML file (see docs/batching.md).
    output_kinds: {output: kind} for the accuracy gate, as ``--output-kind NAME=KIND`` (e.g. {"maps": "map"}).

    Raises a ``UserError`` subclass (exit 2) for bad input and ``AccuracyGateError`` (exit 3) when the
    converted model falls below the thresholds (the bundle is still written, marked as failed, to inspect).
    """
    from xinfer_sdk.converters import package
    from xinfer_sdk.converters.context import CALIB_METHODS, DEFAULT_EVAL_FRACTION, BuildContext, BuildOptions
    from xinfer_sdk.converters.pipeline import run_steps
    from xinfer_sdk.converters.steps import STEPS

    prof = resolve_build_profile(profile, profiles_dirs=profiles_dirs, overrides=overrides)
    prec = resolve_precision(prof, precision)
    ranges = _shapes(shapes)
    batch = _batch_policy(prof, max_batch_size, ranges)
    notes = _batch_notes(prof, batch, ranges)
    method = calib_method or prof.quantization.method
    if method not in CALIB_METHODS:
        raise UserError(f"calibration method {method!r}: expected one of {', '.join(CALIB_METHODS)}")
    if calib_samples is not None and calib_samples < 1:
        raise UserError(f"calib_samples must be >= 1, got {calib_samples}")
    fraction = DEFAULT_EVAL_FRACTION if eval_fraction is None else float(eval_fraction)
    if not 0 < fraction < 1:
        raise UserError(f"eval_fraction must lie strictly between 0 and 1, got {fraction}")
    if prec in ("int8", "fp8") and calib is None:  # fail before any work is done
        from .errors import CalibrationError

        raise CalibrationError(f"{prec.upper()} needs calibration data and none was given; pass --calib DATA: an .npz of arrays "
                               "by input name, a folder of .npy files, or module:function yielding dicts of arrays")
    out = Path(output) if output is not None else default_output(model)
    opts = BuildOptions(
        model=model, profile=prof, precision=prec, output=out, name=name or _bundle_name(out, model), batch=batch,
        shapes=ranges, dynamic_axes={k: {int(a): str(n) for a, n in v.items()} for k, v in (dynamic_axes or {}).items()},
        dtypes=dict(dtypes or {}), input_names=list(input_names) if input_names else None,
        output_names=list(output_names) if output_names else None, weights=weights, signature=signature, opset=opset, calib=calib,
        eval=eval, calib_method=method, per_channel=prof.quantization.per_channel if per_channel is None else per_channel,
        eval_fraction=fraction, thresholds=_thresholds(prof, prec, thresholds), labels_output=labels_output,
        fp16_block_ops=tuple(fp16_block_ops), build_engine=build_engine, progress=progress,
    )
    if calib_samples is not None:
        opts.calib_samples = int(calib_samples)
    if padding is not None:  # else what the CLI set around the build (converters.context.requested), if anything
        from xinfer_sdk.converters.padding import parse_pad

        opts.padding = parse_pad(padding)
    if output_kinds is not None:
        from xinfer_sdk.converters.kinds import parse_kinds

        opts.output_kinds = parse_kinds(output_kinds)
    package.check_output(out)
    staging = package.staging_dir(out)
    scratch = Path(tempfile.mkdtemp(prefix="xinfer-build-"))
    ctx = BuildContext(options=opts, staging=staging, scratch=scratch, warnings=notes)
    steps: list[StepResult] = []
    try:
        try:
            run_steps(STEPS, ctx, results=steps, on_step=on_step)
            ctx.warnings += [f"optional step {s.name} failed: {s.message}" for s in steps if s.status == "failed"]
        except AccuracyGateError as exc:  # keep the evidence: the bundle is written, marked as failed
            package.write(ctx, steps)
            package.publish(staging, out)
            raise AccuracyGateError(f"{exc.message}; the bundle was written to {out} for inspection "
                                    "(accuracy.passed: false)", details=exc.details) from None
        package.write(ctx, steps)
        package.publish(staging, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return open_bundle(out)


# ----------------------------------------------------------------------------------------------------------
def resolve_build_profile(profile: str | Profile | None, *, profiles_dirs: Sequence[str] = (),
                          overrides: Iterable[str] = ()) -> Profile:
    overrides = list(overrides)
    if isinstance(profile, Profile):
        return load_profile(profile, profiles_dirs=profiles_dirs, overrides=overrides) if overrides else profile
    if profile in (None, "", "auto"):
        profile = detect(ProfileRegistry(profiles_dirs)).profile
    return load_profile(str(profile), profiles_dirs=profiles_dirs, overrides=overrides)


def resolve_precision(profile: Profile, precision: str | None) -> str:
    """'auto' -> the profile's default; refuse what the hardware lacks (check_precision says why) and what
    xinfer-sdk cannot produce yet."""
    prec = profile.check_precision(precision or "auto")
    if prec not in BUILDABLE_PRECISIONS:
        cc = f" ({profile.sm})" if profile.sm else ""
        raise UserError(f"{profile.display_name}{cc} supports {prec.upper()}, but xinfer-sdk cannot produce {prec} "
                        f"graphs yet (it builds {', '.join(BUILDABLE_PRECISIONS)})",
                        hint="use --precision int8 (symmetric QDQ, what TensorRT compiles) or fp16")
    return prec


def default_output(model: Any) -> Path:
    """``<model stem>.xinfer`` in the current folder."""
    return Path.cwd() / (_stem(model) + BUNDLE_SUFFIX)


def _bundle_name(out: Path, model: Any) -> str:
    """The model name when ``--name`` is not given: the output folder's stem (``-o mlp.xinfer`` -> ``mlp``),
    which is what a user then types in URLs and charts; the model's stem when the folder has no usable stem."""
    stem = out.name[: -len(BUNDLE_SUFFIX)] if out.name.endswith(BUNDLE_SUFFIX) else out.name
    return stem or _stem(model)


def _stem(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        path = Path(text)
        if path.exists():
            return (path.name if path.is_dir() else path.stem) or "model"
        _, sep, attr = text.rpartition(":")
        if sep and attr:
            return attr
        return path.stem or "model"
    return type(model).__name__.lower() if not hasattr(model, "graph") else "model"


def _shapes(shapes: Any) -> dict[str, ShapeRange]:
    if shapes is None:
        return {}
    if isinstance(shapes, Mapping):
        out = {}
        for k, v in shapes.items():
            out[k] = v if isinstance(v, ShapeRange) else parse_shapes(f"{k}:{v}")[k] if isinstance(v, str) \
                else ShapeRange.fixed(v)
        return out
    return parse_shapes(shapes)


def _batch_policy(profile: Profile, max_batch_size: int | None, shapes: Mapping[str, ShapeRange]) -> BatchPolicy:
    policy = profile.batch
    if max_batch_size is not None:
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise UserError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
        policy = policy.replace(max_batch_size=max_batch_size, preferred_batch_sizes=tuple(
            b for b in policy.preferred_batch_sizes if b <= max_batch_size))
    return policy


def _batch_notes(profile: Profile, policy: BatchPolicy, shapes: Mapping[str, ShapeRange]) -> list[str]:
    """The batch axis follows the batch policy; say so when --shapes asked for another batch range."""
    notes = []
    for name, r in shapes.items():
        if r.max and r.max[0] != policy.max_batch_size:
            notes.append(f"--shapes {name}: the batch axis follows the batch policy (1..{policy.max_batch_size}, "
                         f"max_batch_size of profile {profile.name}), not {r.min[0]}..{r.max[0]}; pass "
                         f"--max-batch-size {r.max[0]} to change it")
    return notes


def _thresholds(profile: Profile, precision: str, given: Thresholds | Mapping[str, Any] | None) -> Thresholds:
    base = profile.thresholds(precision)
    if given is None:
        return base
    if isinstance(given, Thresholds):
        given = dataclasses.asdict(given)
    known = {f.name for f in dataclasses.fields(Thresholds)}
    bad = sorted(set(given) - known)
    if bad:
        raise UserError(f"unknown threshold(s) {', '.join(bad)}; expected {', '.join(sorted(known))}")
    for key, value in given.items():
        if value is None:
            continue
        top = None if key == "max_abs_error" else 1.0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (top and value > top):
            raise UserError(f"threshold {key}={value!r}: expected a number " + ("in 0..1" if top else ">= 0"))
    return dataclasses.replace(base, **{k: float(v) for k, v in given.items() if v is not None})
