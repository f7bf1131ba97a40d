"""Build step: check a padding declaration before it goes into the bundle (padded batching, docs/batching.md).

Padding requests to a shared length is exact only when the model ignores the padded positions (an attention mask,
per-position layers). This step does not assume it: it runs the eval data through the deployable graph twice,
each sample alone at its own length, and in padded batches assembled by the runtime's own code
(``xinfer_sdk/runtime/assemble.py``: the buckets, pad values and crops the server will use), and compares every
cropped answer with the unpadded one by the accuracy gate's tolerance (``min_cosine`` per sample, and
``max_abs_error`` when the thresholds set one). Samples are also cut to shorter lengths along the padded axis, so
one bucket holds several lengths even when the eval data has one.

A difference beyond the tolerance refuses the declaration with a ``UserError`` naming the output, the lengths and
the difference. The checked declaration is left on ``ctx.padding`` for the manifest (``converters/package.py``).

From Python (tests, notebooks)::

    report = check_padding("model.onnx", decl, inputs, outputs, samples, thresholds={"min_cosine": 0.9999})
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import yaml

from xinfer_sdk._lazy import require
from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.errors import UserError
from xinfer_sdk.runtime.assemble import Layout
from xinfer_sdk.runtime.padding import EXAMPLE, PadPlan

#: eval samples the check uses (each also cut to a shorter length), and requests per padded batch
MAX_SAMPLES = 32
BATCH = 8


def parse_pad(value: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """``--pad``: an inline YAML/JSON mapping, or the path of a YAML file holding one (under ``padding:`` or not).

    ``--pad "{inputs: {input_ids: {axis: 1, value: 0}}, buckets: [16, 32, 64, 128], outputs: {logits: 1}}"``"""
    if isinstance(value, Mapping):
        data: Any = value
    else:
        text = os.fspath(value)
        path = Path(text)
        try:
            if path.suffix in (".yaml", ".yml", ".json") or (len(text) < 4096 and path.is_file()):
                if not path.is_file():
                    raise UserError(f"--pad: no file {text!r}", hint=f"give a file, or the declaration inline: {EXAMPLE}")
                text = path.read_text(encoding="utf-8")
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UserError(f"--pad: not a YAML mapping ({str(exc).splitlines()[0]})",
                            hint=f"write it like {EXAMPLE}") from None
    if isinstance(data, Mapping) and set(data) == {"padding"}:
        data = data["padding"]
    if not isinstance(data, Mapping):
        raise UserError(f"--pad: expected a mapping with inputs, buckets and outputs, got {data!r}",
                        hint=f"write it like {EXAMPLE}")
    return dict(data)


def _variants(samples: Sequence[Mapping[str, np.ndarray]], plan: PadPlan, batch_axes: Mapping[str, int | None],
              seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Each sample, and a copy cut to a random shorter length along the padded axis."""
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        out.append(dict(s))
        name, (axis, _) = next(iter(plan.inputs.items()))
        length = s[name].shape[axis]
        if length > 1:
            cut = int(rng.integers(1, length))
            short = dict(s)
            for n, (a, _) in plan.inputs.items():
                idx: list[Any] = [slice(None)] * s[n].ndim
                idx[a] = slice(0, cut)
                short[n] = np.ascontiguousarray(s[n][tuple(idx)])
            out.append(short)
    return out


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def check_padding(model: str | os.PathLike[str], decl: Mapping[str, Any], inputs: Sequence[TensorSpec],
                  outputs: Sequence[TensorSpec], samples: Sequence[Mapping[str, np.ndarray]], *,
                  thresholds: Mapping[str, Any]) -> dict[str, Any]:
    """Padded vs unpadded on ``samples`` (feeds of one request each); the report, or UserError beyond tolerance."""
    plan = PadPlan(decl, inputs, outputs, where="--pad")
    ort = require("onnxruntime", purpose="checking the padding declaration")
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in outputs]
    layout = Layout(inputs, outputs, pad=plan)
    in_axes = {s.name: s.batch_axis for s in inputs}
    reqs = []
    for feeds in _variants(samples, plan, in_axes):
        first, (axis, _) = next(iter(plan.inputs.items()))
        length = feeds[first].shape[axis]
        n = next(feeds[s.name].shape[s.batch_axis] for s in inputs if s.batch_axis is not None)
        reqs.append(SimpleNamespace(feeds=feeds, n=n, extent=length if plan.bucket(length) else None))
    if not any(r.extent is not None for r in reqs):
        raise UserError(f"--pad: no eval sample fits the buckets {plan.buckets} (lengths "
                        f"{sorted({r.feeds[first].shape[axis] for r in reqs})}): nothing was checked",
                        hint="give buckets that hold your lengths, or --eval data of realistic lengths")
    alone = [dict(zip(names, sess.run(names, r.feeds))) for r in reqs]
    # padded batches: requests of one bucket together (and equal unbatched inputs), as the batcher merges them
    groups: dict[Any, list[int]] = {}
    for i, r in enumerate(reqs):
        if r.extent is None:
            continue
        const = tuple(r.feeds[k].tobytes() for k, a in in_axes.items() if a is None)
        groups.setdefault((plan.bucket(r.extent), const), []).append(i)
    worst: dict[str, dict[str, Any]] = {n: {"min_cosine": 1.0, "max_abs_error": 0.0} for n in names}
    padded_batches = 0
    # the runtime may also pad a short request up to an older, longer request's bucket: run every group once more
    # beside the longest sample (same unbatched inputs), so each is also checked padded to the largest bucket seen
    longest: dict[Any, int] = {}
    for key, idx in groups.items():
        top = max(idx, key=lambda i: reqs[i].extent)
        if key[1] not in longest or reqs[top].extent > reqs[longest[key[1]]].extent:
            longest[key[1]] = top
    batches = []
    for (bucket, const), idx in groups.items():
        for start in range(0, len(idx), BATCH):
            part = idx[start:start + BATCH]
            batches.append(part * 2 if len(part) == 1 else part)  # a lone request runs unpadded: pair it to pad it
            carrier = longest[const]
            if plan.bucket(reqs[carrier].extent) != bucket:
                batches.append(part[:BATCH - 1] + [carrier])
    for part in batches:
        chunk = [reqs[i] for i in part]
        target = max(plan.bucket(x.extent) for x in chunk)  # the bucket this batch is padded to
        feeds, padded = layout.stack(chunk)
        padded_batches += padded
        got = layout.split(dict(zip(names, sess.run(names, feeds))), chunk, padded)
        for i, r, res in zip(part, chunk, got):
            ref = alone[i]
            for n in names:
                w = worst[n]
                if res[n].shape != ref[n].shape:
                    raise UserError(f"--pad: output {n!r} of a request of length {r.extent} padded to "
                                    f"{target} has shape {list(res[n].shape)}, unpadded "
                                    f"{list(ref[n].shape)}", hint="crop it: name it under outputs with the "
                                    "axis that follows the padded length")
                cos = _cosine(res[n], ref[n])
                err = float(np.abs(res[n].astype(np.float64) - ref[n].astype(np.float64)).max(initial=0.0))
                if cos < w["min_cosine"]:
                    w.update(min_cosine=cos, length=int(r.extent), bucket=target)
                w["max_abs_error"] = max(w["max_abs_error"], err)
    min_cos = float(thresholds.get("min_cosine") or 0.0)
    max_err = thresholds.get("max_abs_error")
    for n, w in worst.items():
        bad = w["min_cosine"] < min_cos or (max_err is not None and w["max_abs_error"] > float(max_err))
        if bad:
            at = f" (length {w['length']} padded to {w['bucket']})" if "length" in w else ""
            raise UserError(f"--pad: output {n!r} differs when padded: cosine {w['min_cosine']:.6f}{at}, max abs "
                            f"error {w['max_abs_error']:.3g}, beyond the gate's tolerance (min_cosine {min_cos}"
                            + (f", max_abs_error {max_err}" if max_err is not None else "") + "); the model does not "
                            "ignore the padded positions", hint="pad with a value the model masks (attention_mask 0), "
                            "or leave padding out: requests then merge only when their shapes are equal")
    return {"declaration": plan.decl, "requests": len(reqs), "padded_batches": padded_batches, "outputs": worst}


def padding_step(ctx) -> tuple[str, dict[str, Any]]:
    """The pipeline step: check ``ctx.options.padding`` on the eval data; the declaration goes to ``ctx.padding``."""
    from .pipeline import Skip

    decl = getattr(ctx.options, "padding", None)
    if not decl:
        raise Skip("no padding declared (--pad)")
    if not ctx.batched:
        raise UserError("--pad: the model has no batch axis (max_batch_size 0): requests are never merged, so "
                        "there is nothing to pad", hint="remove --pad, or export the model with a dynamic batch axis")
    from .accuracy import eval_data

    data = eval_data(ctx)
    samples = list(itertools.islice(data.batches(1), MAX_SAMPLES))
    model = ctx.model_onnx or ctx.fp32_onnx
    report = check_padding(model, decl, ctx.inputs, ctx.outputs, samples,
                           thresholds=dataclasses.asdict(ctx.options.thresholds))
    ctx.padding = copy.deepcopy(report["declaration"])  # its own object: no YAML alias to the step's details
    worst = min(report["outputs"].items(), key=lambda kv: kv[1]["min_cosine"])
    return (f"{report['requests']} requests in {report['padded_batches']} padded batches match unpadded "
            f"(worst cosine {worst[1]['min_cosine']:.6f} on {worst[0]!r})", report)
