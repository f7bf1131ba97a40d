"""`xinfer-sdk doctor`."""

from __future__ import annotations

import click
from rich.markup import escape

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
    # escape: "[tensorrt]" would otherwise be read as rich markup and vanish from the hint
    rows = [(name, "yes" if b["ok"] else "no", escape(b["detail"]),
             "" if b["ok"] else escape(f"pip install 'xinfer-sdk[{b['extra']}]'"))
            for name, b in report["backends"].items()]
    out.print(table("Backends", ["backend", "works", "detail", "to enable"], rows))
    ort = report["onnxruntime"]
    if ort.get("importable"):
        rows = [(p, "yes" if p in ort["working"] else "no", ort["not_working"].get(p, "")) for p in ort["listed"]]
        out.print(table(f"ONNX Runtime {ort['version']} providers (probed with a real session)",
                        ["provider", "works", "why not"], rows))
    gpu = report.get("gpu") or {}
    rows = [("NVIDIA driver", gpu.get("driver") or "not found (NVML)"),
            ("CUDA the driver supports", gpu.get("driver_cuda") or "-"),
            ("cuda-python (cuda-bindings)", gpu.get("cuda_python") or "not installed"),
            ("CUDA runtime of cuda-python", gpu.get("cuda_runtime") or "-"),
            ("CUDA devices", escape(gpu.get("cuda_reason") or str(gpu.get("cuda_devices")))
             if gpu.get("cuda_devices") is not None else "-"),
            ("TensorRT", (gpu.get("tensorrt") or "not installed")
             + (f" (CUDA {gpu['tensorrt_cuda']} wheels)" if gpu.get("tensorrt_cuda") else "")),
            ("ONNX Runtime", (gpu.get("onnxruntime") or "not installed")
             + (f" (CUDA {gpu['onnxruntime_cuda']} build)" if gpu.get("onnxruntime_cuda") else ""))]
    out.print(table("GPU stack", ["component", "version"], rows))
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
