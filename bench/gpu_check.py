"""The GPU checks in one short run, for a lent GPU machine: environment, engines and their layer precisions,
a side-by-side TensorRT timing, and a markdown report. Driven by bench/gpu_check.sh (installs, pytest -m gpu).

    python bench/gpu_check.py self-check            # here, on CPU: imports, commands, the gpu tests collect
    python bench/gpu_check.py env     --out DIR     # versions, driver, GPUs, ORT providers -> DIR/env-<tag>.json
    python bench/gpu_check.py engines --out DIR     # tiny MLP fp32/fp16/bf16/int8 engines -> layer precisions
    python bench/gpu_check.py bench   --out DIR     # TensorRT fp32 vs fp16 vs bf16 at batch 1 and 32, one run
    python bench/gpu_check.py report  --out DIR     # DIR/*.json + DIR/pytest-*.xml -> DIR/gpu-report.md

Every GPU step catches its own failure and records it, so one broken piece never hides the others' results.
``--tag`` names a pass (trt10 / trt11) so both stacks' results sit side by side in one report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPU_TESTS = ROOT / "tests" / "gpu"
sys.path.insert(0, str(GPU_TESTS))  # gpu_models: the GPU suite's MLP and bundles


def _write(out: Path, name: str, data: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def _version(dist: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------------------------------------
def self_check(_: argparse.Namespace) -> int:
    """What can be checked without a GPU: our modules import, the commands the .sh uses exist, the gpu tests
    collect (pytest --collect-only -m gpu), and each GPU step's code path imports."""
    problems = []
    for mod in ("xinfer_sdk", "xinfer_sdk.converters.engine_check", "xinfer_sdk.converters.bf16",
                "xinfer_sdk.converters.fp16", "xinfer_sdk.converters.tensorrt_engine", "xinfer_sdk.accel.nvidia.engine_plan",
                "gpu_models"):
        try:
            __import__(mod)
        except Exception as exc:
            problems.append(f"import {mod}: {type(exc).__name__}: {exc}")
    for cmd in ("bash", "timeout"):
        if shutil.which(cmd) is None:
            problems.append(f"command {cmd!r} not found")
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                           str(GPU_TESTS)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    collected = [ln for ln in proc.stdout.splitlines() if "::" in ln]
    if proc.returncode != 0 or not collected:
        problems.append(f"pytest --collect-only -m gpu: rc {proc.returncode}, {len(collected)} tests\n{proc.stdout[-2000:]}"
                        f"{proc.stderr[-2000:]}")
    shell = ROOT / "bench" / "gpu_check.sh"
    syntax = subprocess.run(["bash", "-n", str(shell)], capture_output=True, text=True)
    if syntax.returncode != 0:
        problems.append(f"bash -n {shell.name}: {syntax.stderr.strip()}")
    print(f"gpu_check self-check: {len(collected)} gpu tests collect; "
          f"{'OK' if not problems else f'{len(problems)} problem(s)'}")
    for p in problems:
        print("  -", p)
    return 0 if not problems else 1


def env(args: argparse.Namespace) -> int:
    data: dict = {"tag": args.tag, "python": platform.python_version(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12_libs", "tensorrt_cu13_libs",
                 "cuda-python", "cuda-bindings", "onnxruntime", "onnxruntime-gpu", "nvidia-ml-py", "onnx", "numpy"):
        data.setdefault("versions", {})[dist] = _version(dist)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=index,name,driver_version,compute_cap,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        data["nvidia_smi"] = smi.stdout.strip().splitlines()
    except Exception as exc:
        data["nvidia_smi"] = f"{type(exc).__name__}: {exc}"
    try:
        from xinfer_sdk.converters.tensorrt_engine import unavailable_reason

        data["tensorrt_unavailable_reason"] = unavailable_reason()
    except Exception as exc:
        data["tensorrt_unavailable_reason"] = f"{type(exc).__name__}: {exc}"
    try:
        from xinfer_sdk.doctor import ort_providers

        data["ort_providers"] = ort_providers()
    except Exception as exc:
        data["ort_providers"] = f"{type(exc).__name__}: {exc}"
    path = _write(Path(args.out), f"env-{args.tag}.json", data)
    print(f"env -> {path}")
    return 0


def engines(args: argparse.Namespace) -> int:
    """Build the tiny MLP as fp32/fp16/bf16 (and int8 via xs.build) and record each engine's layer precisions."""
    import tempfile

    import gpu_models as gm
    from xinfer_sdk.converters.tensorrt_engine import build_engine

    from xinfer_sdk.bundle import open_bundle

    results: dict = {"tag": args.tag}
    work = Path(tempfile.mkdtemp(prefix="xinfer-gpu-check-"))
    for precision in ("fp32", "fp16", "bf16", "int8"):
        t0 = time.monotonic()
        try:
            if precision == "int8":
                import numpy as np

                import xinfer_sdk as xs

                model = gm.mlp_onnx(work / "mlp.onnx")
                np.savez(work / "calib.npz", x=np.random.default_rng(8).standard_normal((128, 256)).astype("float32"))
                b = xs.build(model, gm.PROFILE_NAME, "int8", calib=work / "calib.npz", output=work / "q.xinfer",
                             max_batch_size=16, thresholds={"min_top1_agreement": 0.0, "min_cosine": 0.95})
                step = {s.name: s for s in b.manifest.steps}["tensorrt"]
                lp = next(iter(b.manifest.engine_layer_precisions().values()), None)
                results[precision] = {"status": step.status, "message": step.message, "layer_precisions": lp}
            else:
                root = gm.make_bundle(work / f"{precision}.xinfer", precision)
                res = build_engine(root / "model.onnx", open_bundle(root).manifest.engine_plan, work / "out",
                                   log=lambda m: None)
                results[precision] = {"status": "ok", "engine": Path(res["path"]).name,
                                      "bytes": Path(res["path"]).stat().st_size, "seconds": res["seconds"],
                                      "layer_precisions": res["layer_precisions"]}
        except Exception as exc:
            results[precision] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                  "traceback": traceback.format_exc()[-3000:]}
        results[precision]["wall_s"] = round(time.monotonic() - t0, 1)
        print(f"engine {precision}: {results[precision]['status']}")
    path = _write(Path(args.out), f"engines-{args.tag}.json", results)
    print(f"engines -> {path}")
    return 0


def bench(args: argparse.Namespace) -> int:
    """TensorRT backend on the MLP, fp32 vs fp16 vs bf16, batch 1 and 32, interleaved rounds; medians."""
    import tempfile

    import gpu_models as gm
    import numpy as np

    from xinfer_sdk.bundle import open_bundle
    from xinfer_sdk.profiles import load_profile
    from xinfer_sdk.runtime.backends.tensorrt import TensorRTBackend

    work = Path(tempfile.mkdtemp(prefix="xinfer-gpu-bench-"))
    backends, rows, errors = {}, {}, {}
    for precision in ("fp32", "fp16", "bf16"):
        try:
            be = TensorRTBackend(open_bundle(gm.make_bundle(work / f"{precision}.xinfer", precision)),
                                 profile=load_profile(gm.PROFILE_NAME), device="cuda:0")
            be.activate()
            backends[precision] = be
        except Exception as exc:
            errors[precision] = f"{type(exc).__name__}: {exc}"
    rng = np.random.default_rng(0)
    feeds = {b: {"x": rng.standard_normal((b, gm.WIDTH)).astype(np.float32)} for b in (1, 32)}
    for _ in range(args.rounds):
        for precision, be in backends.items():
            for b, feed in feeds.items():
                for _ in range(5):
                    be.infer(feed)  # warm
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < args.seconds:
                    be.infer(feed)
                    n += 1
                rows.setdefault(f"{precision}/b{b}", []).append((time.perf_counter() - t0) / n)
    for be in backends.values():
        be.deactivate()
    med = {k: sorted(v)[len(v) // 2] for k, v in rows.items()}
    out = {"tag": args.tag, "median_ms": {k: round(v * 1e3, 4) for k, v in med.items()},
           "samples_per_s": {k: round(int(k.split("/b")[1]) / v, 1) for k, v in med.items()}, "errors": errors,
           "rounds": args.rounds, "seconds": args.seconds,
           "ratio_to_fp32": {k: round(med[f"fp32/b{k.split('/b')[1]}"] / v, 2) for k, v in med.items()
                             if f"fp32/b{k.split('/b')[1]}" in med}}
    path = _write(Path(args.out), f"bench-{args.tag}.json", out)
    print(f"bench -> {path}")
    return 0


def _junit(path: Path) -> dict:
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = []
    for case in suite.iter("testcase"):
        status, detail = "passed", ""
        for kind in ("failure", "error", "skipped"):
            el = case.find(kind)
            if el is not None:
                status, detail = ("failed" if kind != "skipped" else "skipped"), (el.get("message") or "")[:300]
        cases.append((f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}", status, detail))
    return {"cases": cases}


def report(args: argparse.Namespace) -> int:
    out = Path(args.out)
    lines = ["# xinfer-sdk GPU check", "", f"Written {time.strftime('%Y-%m-%d %H:%M:%S')} by bench/gpu_check.sh.", ""]
    for env_file in sorted(out.glob("env-*.json")):
        e = json.loads(env_file.read_text())
        tag = e["tag"]
        lines += [f"## Pass `{tag}`", "", f"- GPUs: {e.get('nvidia_smi')}",
                  "- versions: " + ", ".join(f"{k} {v}" for k, v in (e.get("versions") or {}).items() if v),
                  f"- TensorRT usable: {e.get('tensorrt_unavailable_reason') or 'yes'}",
                  f"- ORT providers: {e.get('ort_providers')}", ""]
        junit = out / f"pytest-{tag}.xml"
        if junit.is_file():
            cases = _junit(junit)["cases"]
            counts = {s: sum(1 for c in cases if c[1] == s) for s in ("passed", "failed", "skipped")}
            lines += [f"### pytest -m gpu: {counts['passed']} passed, {counts['failed']} failed, "
                      f"{counts['skipped']} skipped", "", "| test | result | detail |", "|---|---|---|"]
            lines += [f"| {n} | {s} | {d.replace('|', '/')} |" for n, s, d in cases]
            lines.append("")
        eng = out / f"engines-{tag}.json"
        if eng.is_file():
            lines += ["### Engine layer precisions (tiny MLP)", "", "| precision | status | verdict | detail |",
                      "|---|---|---|---|"]
            for prec, r in json.loads(eng.read_text()).items():
                if prec == "tag":
                    continue
                lp = r.get("layer_precisions") or {}
                detail = lp.get("reason") or r.get("error") or r.get("message") or ""
                lines.append(f"| {prec} | {r.get('status')} | {lp.get('verdict', '-')} | "
                             f"{str(detail).replace('|', '/')[:300]} |")
            lines.append("")
        b = out / f"bench-{tag}.json"
        if b.is_file():
            data = json.loads(b.read_text())
            lines += ["### TensorRT backend timing (median of rounds, same run)", "",
                      "| variant | ms / call | samples/s | vs fp32 |", "|---|---|---|---|"]
            for k, ms in data["median_ms"].items():
                lines.append(f"| {k} | {ms} | {data['samples_per_s'][k]} | {data['ratio_to_fp32'].get(k, '-')}x |")
            if data.get("errors"):
                lines.append(f"\nerrors: {data['errors']}")
            lines.append("")
    for skip in sorted(out.glob("skip-*.json")):
        lines.append(f"- pass skipped: {json.loads(skip.read_text())}")
    for log in sorted(out.glob("step-*.log")):
        lines.append(f"- log `{log.name}`: {log.stat().st_size} bytes")
    path = out / "gpu-report.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"report -> {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, fn in (("self-check", self_check), ("env", env), ("engines", engines), ("bench", bench),
                     ("report", report)):
        p = sub.add_parser(name)
        p.set_defaults(fn=fn)
        p.add_argument("--out", default=os.environ.get("OUT") or ".")
        p.add_argument("--tag", default="trt")
        p.add_argument("--rounds", type=int, default=3)
        p.add_argument("--seconds", type=float, default=0.5)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
