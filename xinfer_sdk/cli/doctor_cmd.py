"""`xinfer-sdk doctor`."""

from __future__ import annotations

import click

from ._common import emit_json, json_option, out, table


@click.command()
@json_option
def doctor(as_json: bool) -> None:
    """Report installed packages, which engines and providers really work here, and any clash."""
    from ..doctor import collect

    report = collect()
    if as_json:
        emit_json(report)
        return
    out.print(f"xinfer-sdk {report['xinfer_sdk']} · Python {report['python']} · {report['platform']}")
    out.print(table("Packages", ["package", "version"], sorted(report["packages"].items())))
    rows = [(name, "yes" if b["ok"] else "no", b["detail"], "" if b["ok"] else f"pip install 'xinfer-sdk[{b['extra']}]'")
            for name, b in report["backends"].items()]
    out.print(table("Backends", ["backend", "works", "detail", "to enable"], rows))
    ort = report["onnxruntime"]
    if ort.get("importable"):
        rows = [(p, "yes" if p in ort["working"] else "no", ort["not_working"].get(p, "")) for p in ort["listed"]]
        out.print(table(f"ONNX Runtime {ort['version']} providers (probed with a real session)",
                        ["provider", "works", "why not"], rows))
    prof = report.get("profile", {})
    if "profile" in prof:
        out.print(f"Detected profile: [bold]{prof['profile']}[/bold] ({prof['reason']})")
    elif prof.get("error"):
        out.print(f"Profile detection failed: {prof['error']}", markup=False)
    if report["problems"]:
        out.print("[bold yellow]Problems:[/bold yellow]")
        for p in report["problems"]:
            out.print(f"  - {p}", markup=False)
    else:
        out.print("No problems found.")
