"""A bundle manifest as summary tables (``xinfer-sdk inspect``, the end of ``xinfer-sdk build``)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from ..bundle import Manifest
from ._common import out, table

_MARK = {"ok": "ok", "skipped": "skipped", "failed": "FAILED"}


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def shape_text(shape, names) -> str:
    dims = []
    for i, d in enumerate(shape):
        label = names[i] if i < len(names) and names[i] else None
        dims.append(str(d) if d >= 0 else (label or "?"))
    return escape("[" + ", ".join(dims) + "]")


def header(m: Manifest, root: str) -> str:
    src = m.source or {}
    where = src.get("factory") or src.get("path") or "-"
    batch = f"max batch {m.max_batch_size}" if m.max_batch_size else "no batch axis"
    return (f"[bold]{escape(m.name)}[/bold] · {m.precision} · profile {escape(str(m.profile.get('name')))} · {batch} · "
            f"{escape(root)}\nfrom {src.get('format', '?')} {escape(str(where))} · built {m.created} with xinfer-sdk "
            f"{m.tools.get('xinfer-sdk', '?')}")


def io_table(m: Manifest):
    rows = [("input", escape(t.name), t.dtype, shape_text(t.shape, t.dim_names)) for t in m.inputs]
    rows += [("output", escape(t.name), t.dtype, shape_text(t.shape, t.dim_names)) for t in m.outputs]
    return table("Inputs and outputs", ["", "name", "dtype", "shape"], rows)


def steps_table(m: Manifest):
    rows = [(s.name, _MARK.get(s.status, s.status), f"{s.seconds:.2f}s", escape(s.message)) for s in m.steps]
    return table("Steps", ["step", "status", "time", "what happened"], rows)


def accuracy_table(acc: dict[str, Any] | None):
    if not acc:
        return None
    th = acc.get("thresholds") or {}
    rows = []
    for name, mtr in (acc.get("outputs") or {}).items():
        rows.append((escape(name), escape(str(mtr.get("kind", "-"))), _f(mtr.get("cosine"), 6),
                     _f(mtr.get("min_sample_cosine"), 6), _kind_figure(mtr), _f(mtr.get("max_abs_error"), 4),
                     _f(mtr.get("max_rel_error"), 4)))
    verdict = "PASSED" if acc.get("passed") else "FAILED"
    title = (f"Accuracy gate: {verdict} · {acc.get('compared', '')} · {acc.get('samples')} samples from "
             f"{acc.get('data')} · thresholds cos >= {th.get('min_cosine')}, top-1 >= {th.get('min_top1_agreement')}"
             + (f", max abs <= {th['max_abs_error']}" if th.get("max_abs_error") is not None else ""))
    t = table(escape(title), ["output", "kind", "cosine", "worst sample", "top-1 / IoU / boxes", "max abs err",
                              "max rel err"], rows)
    return t


def _kind_figure(m: dict[str, Any]) -> str:
    """The figure of the output's own kind: top-1 (class, sequence), mask IoU (map), boxes matched (boxes)."""
    for key, label in (("top1_agreement", "top-1 "), ("exact_match", "match "), ("mask_iou", "IoU "),
                       ("box_match", "boxes ")):
        if m.get(key) is not None:
            return label + _f(m[key], 4)
    return "-"


def accuracy_lines(acc: dict[str, Any] | None) -> list[str]:
    if not acc:
        return []
    lines = []
    true = acc.get("true_accuracy")
    if true:
        lines.append(f"true accuracy on {true['output']}: {true['converted']:.4f} ({acc.get('precision')}) vs "
                     f"{true['reference']:.4f} (FP32), drop {true['drop']:+.4f} (limit "
                     f"{(acc.get('thresholds') or {}).get('max_accuracy_drop')})")
    for name, m in (acc.get("outputs") or {}).items():
        if m.get("kind"):
            lines.append(f"{name}: {m['kind']}, {m.get('why', '')}; gated on {m.get('metric', 'cosine')}")
    lines += [f"below threshold: {f}" for f in acc.get("failures") or []]
    return lines


def calibration_lines(cal: dict[str, Any] | None) -> list[str]:
    if not cal:
        return []
    src = cal.get("source") or {}
    return [f"calibration: {cal.get('scheme')} {cal.get('activation_type')} activations / {cal.get('weight_type')} "
            f"weights, {cal.get('method')}, {'per-channel' if cal.get('per_channel') else 'per-tensor'}, "
            f"{cal.get('samples')} samples from {src.get('what')} (sha256 {str(cal.get('data_sha256'))[:12]}), "
            f"zero points: {cal.get('zero_points')}"]


def plan_lines(plan: dict[str, Any] | None) -> list[str]:
    if not plan:
        return []
    b = plan.get("batch") or {}
    ws = plan.get("workspace_bytes")
    shapes = "; ".join(f"{n} {r['min']}..{r['opt']}..{r['max']}" for prof in plan.get("profiles") or []
                       for n, r in prof.items())
    majors = ", ".join(f"TRT {k}: {v.get('network', '?')}" for k, v in (plan.get("per_major") or {}).items())
    return [f"TensorRT plan {str(plan.get('hash', ''))[:12]}: {plan.get('precision')}, batch "
            f"{b.get('min', '-')}..{b.get('opt', '-')}..{b.get('max', '-')}, workspace {size(ws)}, builder level "
            f"{plan.get('builder_optimization_level')}, DLA {_dla_text(plan.get('dla') or {})}"
            f"; {majors}", f"  shapes: {shapes or '-'}"]


def engine_lines(m: Manifest) -> list[str]:
    """One line per built engine: its layer precisions as TensorRT's engine inspector reported them."""
    lines = []
    for path, lp in sorted(m.engine_layer_precisions().items()):
        counts = lp.get(lp.get("basis") or "flop_layers") or {}
        share = lp.get("share") or {}
        what = "FLOP layers" if lp.get("basis") == "flop_layers" else "compute layers"
        detail = ", ".join(f"{p} {n} ({share.get(p, 0):.0%})" for p, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        body = f"{what}: {detail}; {lp.get('layers')} layers" if detail else str(lp.get("reason", ""))
        lines.append(f"engine {path}: {lp.get('verdict', '?')} for {lp.get('requested', m.precision)} · {body}")
    return lines


def _dla_text(dla: dict[str, Any]) -> str:
    if dla.get("enabled"):
        return "on (static shapes)"
    return f"off ({dla['reason']})" if dla.get("requested") else "off"


def artifacts_table(m: Manifest):
    rows = [(escape(a.path), a.role, size(a.bytes), a.sha256[:16] + "...") for a in sorted(m.artifacts.values(),
                                                                                     key=lambda a: a.path)]
    return table("Artifacts (sha256 verified on load)", ["path", "role", "size", "sha256"], rows)


def budget_line(b: dict[str, Any] | None) -> list[str]:
    if not b:
        return []
    return [f"memory budget at batch {b.get('batch')} ({b.get('precision')}): {size(b.get('total_bytes'))} (weights "
            f"{size(b.get('weights_bytes'))}, activations {size(b.get('activations_bytes'))}, workspace "
            f"{size(b.get('workspace_bytes'))}) of {size(b.get('usable_bytes'))} usable: {b.get('usable_basis')}"]


def render(m: Manifest, root: str) -> None:
    out.print(header(m, root))
    out.print(io_table(m))
    out.print(steps_table(m))
    acc = accuracy_table(m.accuracy)
    if acc is not None:
        out.print(acc)
    for line in [*accuracy_lines(m.accuracy), *calibration_lines(m.calibration), *plan_lines(m.engine_plan),
                 *engine_lines(m), *budget_line((m.extra or {}).get("memory_budget"))]:
        out.print(line, markup=False)
    out.print(artifacts_table(m))
    for w in (m.extra or {}).get("warnings") or []:
        out.print(f"note: {w}", markup=False)


def _f(v: Any, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
