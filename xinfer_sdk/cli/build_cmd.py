"""`xinfer-sdk build MODEL` and `xinfer-sdk inspect BUNDLE`: the CLI over ``xs.build`` and ``open_bundle``."""

from __future__ import annotations

import click

from ..errors import AccuracyGateError, UserError
from ..profiles import PRECISIONS
from . import _bundle_view as view
from ._common import emit_json, err, json_option, out, progress, set_option


def _pairs(values: tuple[str, ...], option: str, example: str) -> list[tuple[str, str]]:
    pairs = []
    for text in values:
        for item in filter(None, (v.strip() for v in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key or not value:
                raise UserError(f"{option} {item!r}: expected {example}")
            pairs.append((key.strip(), value.strip()))
    return pairs


def _axes(values: tuple[str, ...]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for key, label in _pairs(values, "--axis", "NAME:AXIS=LABEL, e.g. input_ids:1=seq"):
        name, sep, axis = key.rpartition(":")
        if not sep or not name or not axis.isdigit():
            raise UserError(f"--axis {key}={label}: expected NAME:AXIS=LABEL, e.g. input_ids:1=seq")
        axes.setdefault(name, {})[int(axis)] = label
    return axes


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


@click.command()
@click.argument("model")
@click.option("--profile", "profile_name", default="auto", show_default=True,
              help="Hardware profile name or YAML path; 'auto' detects this machine's.")
@click.option("--precision", type=click.Choice(["auto", *PRECISIONS]), default="auto", show_default=True,
              help="auto = the profile's default precision.")
@click.option("--calib", metavar="DATA", help="Calibration data: .npz by input name, a folder of .npy, or module:function.")
@click.option("--eval", "eval_data", metavar="DATA", help="Held-out data for the accuracy gate (same formats); "
              "default: a split of --calib.")
@click.option("--shapes", multiple=True, metavar="NAME:MIN..OPT..MAX",
              help="Shape ranges, e.g. input_ids:1x8..32x128..64x512 (repeatable or comma-separated).")
@click.option("--axis", "axes", multiple=True, metavar="NAME:AXIS=LABEL",
              help="Name a dynamic axis of a PyTorch model's input or output, e.g. input_ids:1=seq (repeatable).")
@click.option("--dtype", "dtypes", multiple=True, metavar="NAME=DTYPE",
              help="Dtype of an example input built from --shapes (default float32), e.g. input_ids=int64.")
@click.option("--input-names", help="Comma-separated input names for a PyTorch model (default: forward() args).")
@click.option("--output-names", help="Comma-separated output names for a PyTorch model.")
@click.option("--weights", type=click.Path(dir_okay=False), help="state_dict for module:factory "
              "(read with torch.load(weights_only=True)).")
@click.option("--signature", help="TensorFlow SavedModel signature to convert (default: serving_default, or the "
              "only one).")
@click.option("--opset", type=int, help="ONNX opset of the export (default 17: every TensorRT the profiles name).")
@click.option("--max-batch-size", type=int, help="Largest batch (default: the profile's batch.max_batch_size).")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]),
              help="Calibration method (default: the profile's quantization.method).")
@click.option("--calib-samples", type=int, help="Samples used for calibration (default 256).")
@click.option("--per-channel/--per-tensor", default=None, help="Weight quantization granularity (default: profile).")
@click.option("--eval-fraction", type=float, help="Share of --calib held out for the gate without --eval (0.2).")
@click.option("--min-cosine", type=float, help="Gate: lowest cosine similarity per output.")
@click.option("--min-top1", type=float, help="Gate: lowest top-1 agreement on the primary output.")
@click.option("--max-abs-error", type=float, help="Gate: largest absolute error per output.")
@click.option("--max-accuracy-drop", type=float, help="Gate: largest drop of true accuracy (with labels).")
@click.option("--labels-output", help="Output the labels refer to (default: the first classifier-shaped one).")
@click.option("--output-kind", "output_kinds", multiple=True, metavar="NAME=KIND",
              help="What an output is, for the accuracy gate: class, sequence, map, boxes, embedding or raw "
              "(repeatable; default: inferred from the graph and the shape, see docs/building.md).")
@click.option("--pad", metavar="YAML", help="Padded batching to check and record: an inline mapping or a YAML file, "
              "e.g. \"{inputs: {input_ids: {axis: 1, value: 0}}, buckets: [16, 32, 64], outputs: {logits: 1}}\" "
              "(docs/batching.md).")
@click.option("--fp16-block-op", "fp16_block_ops", multiple=True, metavar="OP",
              help="Keep this op type in FP32 in an FP16 build (repeatable).")
@click.option("--no-engine", is_flag=True, help="Record the TensorRT plan but do not build the engine here.")
@click.option("--name", help="Model name in the bundle (default: the output folder's stem, e.g. -o mlp.xinfer -> mlp).")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Bundle folder (default: ./<model>.xinfer).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the bundle's path (stdout) and errors (stderr): no "
              "per-step lines, progress bar, tables or notes.")
@set_option
@json_option
@click.pass_context
def build(ctx: click.Context, model: str, profile_name: str, precision: str, calib, eval_data, shapes, axes, dtypes,
          input_names, output_names, weights, signature, opset, max_batch_size, calib_method, calib_samples, per_channel,
          eval_fraction, min_cosine, min_top1, max_abs_error, max_accuracy_drop, labels_output, output_kinds,
          pad, fp16_block_ops, no_engine, name, output, quiet, overrides, as_json) -> int:
    """Compile MODEL (ONNX, TorchScript .pt, torch.export .pt2, module:factory, TensorFlow SavedModel folder or
    Keras .keras file) into a bundle for a profile.

    Steps: input, export, cleanup, memory budget, FP16/INT8, accuracy gate, TensorRT (plan always; engine when
    TensorRT and a GPU are here). Exit 3 when the accuracy gate fails (the bundle is kept to inspect).
    """
    from ..builder import build as do_build

    thresholds = {"min_cosine": min_cosine, "min_top1_agreement": min_top1, "max_abs_error": max_abs_error,
                  "max_accuracy_drop": max_accuracy_drop}

    def on_step(step) -> None:
        if not quiet:
            err.print(f"{step.name:>14} | {view._MARK.get(step.status, step.status):7} {step.seconds:6.2f}s  "
                      f"{step.message}", markup=False)

    from ..converters.kinds import parse_kinds

    kinds = parse_kinds(_pairs(output_kinds, "--output-kind", "NAME=KIND, e.g. maps=map"))
    bundle = _build(do_build, model, profile_name, precision, as_json=as_json, on_step=on_step, kw=dict(
        calib=calib, eval=eval_data, shapes=shapes or None, output=output,
        profiles_dirs=ctx.obj.get("profiles_dirs", ()), overrides=overrides,
        thresholds={k: v for k, v in thresholds.items() if v is not None} or None, calib_method=calib_method,
        calib_samples=calib_samples, max_batch_size=max_batch_size, name=name,
        progress=None if quiet else progress(), dynamic_axes=_axes(axes), dtypes=dict(_pairs(
            dtypes, "--dtype", "NAME=DTYPE, e.g. input_ids=int64")), input_names=_names(input_names),
        output_names=_names(output_names), weights=weights, signature=signature, opset=opset, per_channel=per_channel,
        eval_fraction=eval_fraction, labels_output=labels_output, fp16_block_ops=fp16_block_ops,
        build_engine=not no_engine, output_kinds=kinds or None, padding=pad or None))
    if as_json:
        emit_json({"bundle": str(bundle.root), "manifest": bundle.manifest.to_dict()})
        return 0
    if quiet:  # for scripts: BUNDLE=$(xinfer-sdk build -q ...)
        out.print(str(bundle.root), markup=False)
        return 0
    view.render(bundle.manifest, str(bundle.root))
    out.print(f"[bold]bundle written:[/bold] {bundle.root}")
    return 0


def _build(do_build, model, profile_name, precision, *, as_json: bool, on_step, kw):
    """``builder.build``; a failed gate prints its report (with -q too: it explains the error), then propagates."""
    try:
        return do_build(model, profile_name, precision, on_step=on_step, **kw)
    except AccuracyGateError as exc:
        report = exc.details.get("accuracy")
        if not as_json and report:
            t = view.accuracy_table(report)
            if t is not None:
                out.print(t)
            for line in view.accuracy_lines(report):
                out.print(line, markup=False)
        raise


@click.command()
@click.argument("bundle_path", metavar="BUNDLE")
@click.option("--no-verify", is_flag=True, help="Do not check the artifacts' sha256 checksums.")
@json_option
def inspect(bundle_path: str, no_verify: bool, as_json: bool) -> int:
    """Show a bundle's manifest: IO, steps, accuracy report, calibration, TensorRT plan, artifacts."""
    from ..bundle import open_bundle

    bundle = open_bundle(bundle_path, verify=not no_verify)
    if as_json:
        emit_json({"bundle": str(bundle.root), "verified": not no_verify, **bundle.manifest.to_dict()})
        return 0
    view.render(bundle.manifest, str(bundle.root))
    if not no_verify:
        out.print(f"checksums: all {len(bundle.manifest.artifacts)} artifacts verified")
    return 0
