"""`xinfer-sdk profiles list | show | detect | validate`."""

from __future__ import annotations

import click

from ..errors import EXIT_USER
from ._common import emit_json, err, fmt, json_option, out, registry, set_option, table


@click.group()
def profiles() -> None:
    """Hardware profiles: list, show, detect this machine's, validate your own."""


@profiles.command("list")
@json_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> int:
    """List every profile (built-in, XINFER_PROFILES_PATH, --profiles-dir)."""
    reg = registry(ctx)
    good, bad = reg.load_all()
    for e in bad:
        err.print(f"warning: skipped broken profile: {e}", markup=False)
    if as_json:
        emit_json({"profiles": [_summary(p) for p in good], "errors": [str(e) for e in bad]})
        return 0
    rows = [(p.name, p.kind, p.display_name, p.sm or "-", fmt(p.memory_gb, " GB"),
             _fig(p, "memory_bandwidth_gbps", p.memory_bandwidth_gbps, " GB/s"),
             p.default_precision, ",".join(p.precisions), _origin(reg, p)) for p in good]
    out.print(table(None, ["name", "kind", "device", "sm", "memory", "bandwidth", "default", "precisions", "from"],
                    rows, whole=("name",)))
    return 0


def _fig(prof, path: str, value, unit: str = "") -> str:
    """A figure for display: 'unknown' where the profile says the vendor has not published it."""
    return "unknown" if prof.figure_unknown(path) else fmt(value, unit)


def _origin(reg, p) -> str:
    from pathlib import Path

    return "built-in" if Path(p.file).parent == reg.folders[0] else p.file


def _summary(p) -> dict:
    return {"name": p.name, "kind": p.kind, "description": p.description, "compute_capability": p.compute_capability,
            "memory_gb": p.memory_gb, "memory_bandwidth_gbps": p.memory_bandwidth_gbps, "vendor": p.vendor,
            "arch_family": p.arch_family, "l2_cache_mb": p.l2_cache_mb, "usd_per_gpu_hour": p.usd_per_gpu_hour,
            "unknown": sorted(p.unknown),
            "default_precision": p.default_precision, "precisions": list(p.precisions), "file": p.file}


@profiles.command()
@click.argument("name")
@set_option
@json_option
@click.pass_context
def show(ctx: click.Context, name: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Show one profile (NAME or a YAML path): figures with sources, and the policy it sets."""
    from ..profiles import load_profile

    prof = load_profile(name, profiles_dirs=ctx.obj.get("profiles_dirs", ()), overrides=overrides)
    if as_json:
        emit_json(prof.to_dict())
        return
    chain = " <- ".join(prof.chain)
    out.print(f"[bold]{prof.name}[/bold]: {prof.display_name} ({prof.kind}) · {prof.file}" +
              (f" · inherits {chain}" if len(prof.chain) > 1 else ""))
    src = prof.sources
    rows = [
        ("compute capability", fmt(prof.compute_capability) + (f" ({prof.sm})" if prof.sm else ""),
         "; ".join(src.get("compute_capability", ()))),
        ("memory", fmt(prof.memory_gb, " GB") + (" (unified with CPU)" if prof.unified_memory else ""),
         "; ".join(src.get("memory_gb", ()))),
        ("usable by a model", fmt(round(prof.usable_memory_gb(), 2) if prof.memory_gb else None, " GB"),
         f"(memory - {prof.memory.reserve_gb:g} GB reserve) x {prof.memory.usable_fraction:g}"),
        ("bandwidth", _fig(prof, "memory_bandwidth_gbps", prof.memory_bandwidth_gbps, " GB/s"),
         "; ".join(src.get("memory_bandwidth_gbps", ()))),
        ("L2 cache", _fig(prof, "l2_cache_mb", prof.l2_cache_mb, " MB"), "; ".join(src.get("l2_cache_mb", ()))),
        ("host link", _fig(prof, "host_link_gbps", prof.host_link_gbps, " GB/s per direction")
         if prof.host_link_gbps is not None or prof.figure_unknown("host_link_gbps") else "PCIe (planner's rule)",
         "; ".join(src.get("host_link_gbps", ()))),
        ("TDP", _fig(prof, "tdp_w", prof.tdp_w, " W"), "; ".join(src.get("tdp_w", ()))),
        ("DLA cores", str(prof.dla_cores), "; ".join(src.get("dla_cores", ()))),
        ("architecture", f"{prof.arch_family} ({prof.vendor})", ""),
        ("price", _price(prof), "; ".join(src.get("pricing", ()))),
    ]
    out.print(table("Figures", ["figure", "value", "source"], rows))
    rows = []
    for p in ("fp32", "tf32", "fp16", "bf16", "int8", "fp8"):
        value, basis = prof.peak(p)
        unit = " TOPS" if p == "int8" else " TFLOPS"
        shown = "unknown" if value is None and prof.figure_unknown(f"peak_tflops.{p}") else fmt(value, unit)
        rows.append((p, shown, "yes" if p in prof.precisions else "no", basis))
    out.print(table(f"Dense peaks ({prof.peak_basis}); sources: {'; '.join(src.get('peak_tflops', ())) or '-'}",
                    ["precision", "peak", "supported", "basis"], rows))
    b = prof.batch.to_dict()
    q = prof.quantization
    rows = [
        ("precisions (preference order)", ", ".join(prof.precisions)),
        ("default precision", prof.default_precision),
        ("INT8 scheme", f"{q.scheme}, activations {q.activation_type}, weights {q.weight_type}, "
                        f"per-channel {q.per_channel}, {q.method}"),
        ("batch", ", ".join(f"{k}={v}" for k, v in b.items())),
        ("TensorRT", f"versions {list(prof.tensorrt.versions) or 'none'}, opt level "
                     f"{prof.tensorrt.builder_optimization_level}, workspace {prof.memory.workspace_gb:g} GB, DLA "
                     f"{'on (GPU fallback)' if prof.tensorrt.use_dla else 'off'}"),
        ("backends (preference order)", ", ".join(prof.backends)),
    ]
    out.print(table("Policy", ["setting", "value"], rows))
    for n in prof.notes:
        out.print(f"  note: {n}", markup=False)


def _price(prof) -> str:
    if prof.price_per_hour_usd is not None:
        return f"${prof.price_per_hour_usd:g}/GPU-hour (set in the profile)"
    if not prof.pricing:
        return "-"
    i = prof.pricing["instance"]
    return (f"${prof.usd_per_gpu_hour:g}/GPU-hour: {i['provider']} {i['name']} ({i['gpus']} GPU), "
            f"${i['usd_per_hour']:g}/h" + (f", {i['region']}" if i.get("region") else "")
            + (f", {i['date']}" if i.get("date") else ""))


@profiles.command()
@json_option
@click.pass_context
def detect(ctx: click.Context, as_json: bool) -> None:
    """Say which profile fits this machine, and why."""
    from ..profiles import detect as run_detect

    d = run_detect(registry(ctx))
    if as_json:
        emit_json(d.to_dict())
        return
    out.print(f"[bold]{d.profile}[/bold]")
    out.print(f"  why: {d.reason}", markup=False)
    h = d.host
    out.print(f"  host: {h.arch}, {h.usable_cpus:g}/{h.logical_cpus} CPUs usable, "
              f"{fmt(h.memory_gb, ' GB')} memory, ISA: {' '.join(h.isa) or '-'}", markup=False)


@profiles.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@json_option
@click.pass_context
def validate(ctx: click.Context, files: tuple[str, ...], as_json: bool) -> int:
    """Check profile YAML files: 'ok' per good file, one line per problem (every problem of a file, not only the
    first); exit 2 if any is broken."""
    reg = registry(ctx)
    results = []
    for f in files:
        prof, problems = reg.problems(f)
        if prof is not None:
            results.append({"file": f, "ok": True, "name": prof.name})
        else:
            errors = [str(e) for e in problems]
            results.append({"file": f, "ok": False, "error": errors[0], "errors": errors})
    if as_json:
        emit_json({"results": results})
    else:
        for r in results:
            if r["ok"]:
                out.print(f"ok     {r['file']} ({r['name']})", markup=False)
            else:
                for e in r["errors"]:
                    err.print(f"error: {e}", markup=False)
    return EXIT_USER if any(not r["ok"] for r in results) else 0
