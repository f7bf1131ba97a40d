"""Regenerate bench/data/published_gpu_results.yaml from local git mirrors of the public sources.

Not part of the product and not run by the tests: it documents, as code, exactly how every figure in the
YAML was read (which file, which line, which division by the number of accelerators), so anyone can redo it.

Inputs are git directories (bare mirrors or clones) of
  - github.com/mlcommons/inference_results_v<round>  (one per round; pass several --mlperf DIR)
  - github.com/NVIDIA/TensorRT                       (--tensorrt DIR)
Every figure is read from the commit each directory's HEAD (or the named TensorRT ref) points at; the commit is
written into the record, so a URL pinned to that commit shows the very line.

    python bench/data/make_published_yaml.py \
        --mlperf /path/inference_results_v0.7 ... --mlperf /path/inference_results_v4.1 \
        --tensorrt /path/TensorRT > bench/data/published_gpu_results.yaml

Selection rules (also in bench/data/README.md):
  * closed division only; MaxQ (power-capped), MIG, multi-use and vGPU systems are skipped;
  * NVIDIA's own submissions from every round given; other submitters' only from the rounds in OEM_ROUNDS
    (they run NVIDIA's published harness on their servers) for the GPUs whose newest NVIDIA figure is old;
  * throughput of a multi-GPU system is divided by its accelerator count (per_accelerator: true, divisor N);
  * `primary: true` marks one record per (gpu, benchmark, scenario): NVIDIA before other submitters, then the
    newest round, then the raw TensorRT harness before Triton, then the fewest GPUs.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys

import yaml

MODEL_DIRS = {"resnet50": "resnet50", "bert-99": "bert-large-384", "bert-99.9": "bert-large-384"}
SCENARIOS = {"Offline": "offline", "Server": "server", "SingleStream": "single-stream"}
# (regex on accelerator_model_name, profile name); first match wins
GPU_NAMES = [
    (r"^(NVIDIA )?(Tesla )?T4$", "t4"),
    (r"^NVIDIA A10$", "a10"),
    (r"^NVIDIA L4$", "l4"),
    (r"^NVIDIA L40S$", "l40s"),
    (r"^NVIDIA A100-SXM-80GB$", "a100-sxm4-80gb"),
    (r"^NVIDIA A100-SXM4(-40GB)?$", "a100-sxm4-40gb"),  # v0.7 "A100-SXM4" is the 40 GB part (memory "40GB")
    (r"^NVIDIA A100-PCIe(-40GB)?$", "a100-pcie-40gb"),
    (r"^NVIDIA A100-PCIe-80GB$", "a100-pcie-80gb"),
    (r"^NVIDIA H100-SXM-80GB$", "h100-sxm"),
    (r"^NVIDIA H100-PCIe-80GB$", "h100-pcie"),
    (r"^NVIDIA H100-NVL-94GB$", "h100-nvl"),
    (r"^NVIDIA H200-SXM-141GB$", "h200"),
    (r"^NVIDIA B200-SXM-180GB$", "b200"),
    (r"^NVIDIA (Jetson AGX )?Orin$", "jetson-agx-orin-32gb"),  # systems JSON: 32 GB memory
    (r"^NVIDIA Jetson AGX Orin 64G$", "jetson-agx-orin-64gb"),  # v3.1: "Developer Kit 64G", 64 GB
    (r"^NVIDIA Orin NX$", "jetson-orin-nx-16gb"),  # systems JSON: 16 GB memory
    (r"^NVIDIA AGX Xavier$", "jetson-agx-xavier"),
    (r"^NVIDIA Xavier NX$", "jetson-xavier-nx"),
]
SKIP_SYSTEM = re.compile(r"MaxQ|MIG|HeteroMultiUse|Triton_CPU|Inferentia", re.I)
# rounds whose non-NVIDIA submissions are kept: T4 and A10 have no NVIDIA figure after v0.7/v1.1,
# L40S none at all, and H100/H200/L4 figures of v4.1 run TensorRT 10
OEM_ROUNDS = {"t4": {"v3.0"}, "a10": {"v2.1"}, "l4": {"v3.0", "v4.1"}, "l40s": {"v4.1"},
              "h100-sxm": {"v4.1"}, "h100-pcie": {"v4.1"}, "h100-nvl": {"v4.1"}, "h200": {"v4.1"}}
# shared note texts; records name them by key, bench/published.py expands them
NOTES = {
    "varseqlen": "MLPerf BERT inputs are the SQuAD v1.1 dev set tokenized to at most 384 tokens and run by NVIDIA's "
                 "variable-sequence-length kernels without padding, so the work per sample is below a padded "
                 "seq-384 pass (see README: work per sample)",
    "triton": "Triton Inference Server harness; the raw TensorRT harness of the same system is a separate record",
    "oem": "submitted by another vendor on its own server, running NVIDIA's published MLPerf harness code",
    "arm-host": "Arm (aarch64) host CPU",
    "orin-32gb": "the systems JSON says 'NVIDIA Jetson AGX Orin' with 32 GB memory, hence jetson-agx-orin-32gb; "
                 "but NVIDIA's v3.1 run on the 'Jetson AGX Orin Developer Kit 64G' is within 0.3 % on ResNet-50 "
                 "Offline (6423.63 vs 6438.1), so this 32 GB developer kit may carry the 64GB module's GPU rather "
                 "than the production 32GB module's smaller one: treat the GPU as uncertain",
    "orin-64gb": "systems JSON: 'NVIDIA Jetson AGX Orin 64G', system 'Jetson AGX Orin Developer Kit 64G', 64 GB",
    "precision-from-config": "precision read from the submitter's own config class (precision / use_fp8), which "
                             "differs from NVIDIA's choice for this benchmark",
    "precision-assumed": "the submitter's config class was not found; precision assumed to be NVIDIA's for this "
                         "benchmark and GPU",
    "index-extract": "round not mirrorable here: the file was read on its own from a stored copy of the repository "
                     "and its lines kept verbatim in bench/data/mlperf_index_extract.yaml",
    "jetson-gpu-dla": "GPU + both DLA cores (the systems JSON hw_notes say the DLAs are used in ResNet-50 Offline)",
    "jetson-gpu-only": "GPU only (per the systems JSON hw_notes, the DLAs are used only in ResNet-50 Offline)",
    "hopper-fp8": "bert-99.9 on Hopper: NVIDIA's config sets precision=fp16 with use_fp8=True (FP8 engine), "
                  "recorded as fp8",
    "vboost": "NVIDIA's config for this system sets vboost_slider=1 (raised GPU voltage/clock boost)",
    "trt-padded": "padded fixed sequence length 384; the timing excludes host<->device copies (README: 'The time "
                  "measurements do not include the time required to copy inputs to the device and copy outputs to "
                  "the host')",
    "trt-plugins": "engine built by the demo's builder with NVIDIA's BERT plugins (fused multi-head attention, "
                   "skip-layernorm, fused GELU bias)",
    "a100-40g": "the README says 'NVIDIA A100 (40G)' without the form factor; mapped to the only 40 GB A100 "
                "profile, a100-pcie-40gb",
    "ada-ampere-flag": "the README says the script ran with '--gpu Ampere' on this Ada GPU",
}

# NVIDIA/TensorRT demo/BERT/README.md: (git ref, heading regex, profile, note)
TRT_TABLES = [
    ("release/8.4", r"NVIDIA T4 \(16GB\)", "t4", None),
    ("release/8.4", r"NVIDIA A100 \(40GB\)", "a100-pcie-40gb", "a100-40g"),
    ("v10.8.0", r"NVIDIA A100 \(40GB\)", "a100-pcie-40gb", "a100-40g"),
    ("v10.8.0", r"NVIDIA L4$", "l4", "ada-ampere-flag"),
    ("v10.8.0", r"NVIDIA L40S$", "l40s", "ada-ampere-flag"),
]


def git(repo: str, *args: str) -> str:
    return subprocess.check_output(["git", "-C", repo, *args], text=True)


def cat_files(repo: str, paths: list[str]) -> dict[str, str | None]:
    """Read many blobs at HEAD in one `git cat-file --batch` call."""
    data = subprocess.run(["git", "-C", repo, "cat-file", "--batch"], check=True, capture_output=True,
                          input="".join(f"HEAD:{p}\n" for p in paths).encode()).stdout
    out: dict[str, str | None] = {}
    pos = 0
    for p in paths:
        nl = data.index(b"\n", pos)
        header = data[pos:nl].decode()
        pos = nl + 1
        if header.endswith("missing"):
            out[p] = None
            continue
        size = int(header.split()[2])
        out[p] = data[pos:pos + size].decode("utf-8", "replace")
        pos += size + 1
    return out


def gpu_of(acc: str | None) -> str | None:
    for rx, name in GPU_NAMES:
        if acc and re.search(rx, acc.strip()):
            return name
    return None


def headline(text: str, scenario: str) -> tuple[float, str, str] | None:
    """(value, unit, printed line) of the result line in the 'MLPerf Results Summary' section."""
    head = text.split("Additional Stats")[0]
    if scenario == "Offline":
        m = re.search(r"^(Samples per second\s*:\s*([\d.e+]+))\s*$", head, re.M)
        return (float(m.group(2)), "samples/s", m.group(1).strip()) if m else None
    if scenario == "Server":
        m = re.search(r"^((?:Scheduled|Completed) samples per second\s*:\s*([\d.e+]+))\s*$", head, re.M)
        return (float(m.group(2)), "samples/s", m.group(1).strip()) if m else None
    m = re.search(r"^(90(?:th|\.00) percentile latency \(ns\)\s*:\s*(\d+))\s*$", head, re.M)
    return (int(m.group(2)) / 1e6, "ms", m.group(1).strip()) if m else None


def stat(text: str, rx: str) -> float | None:
    m = re.search(rx, text, re.M)
    return float(m.group(1)) if m else None



CONFIG_BENCH = {"resnet50": "resnet50", "bert-99": "bert", "bert-99.9": "bert"}
CONFIG_KEYS = ("gpu_batch_size", "dla_batch_size", "precision", "use_fp8", "use_graphs", "start_from_device")


def _literal(node: ast.AST):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def _py_classes(text: str | None) -> dict[str, dict]:
    """class name -> {bases, attrs, decorator} of one NVIDIA configs/... __init__.py (parsed, never run)."""
    out: dict[str, dict] = {}
    if not text:
        return out
    for node in ast.parse(text.replace("\u00a0", " ")).body:  # some submitters paste no-break spaces
        if not isinstance(node, ast.ClassDef):
            continue
        attrs = {}
        for st in node.body:
            if isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name):
                attrs[st.targets[0].id] = _literal(st.value)
        deco = " ".join(ast.unparse(d) for d in node.decorator_list)
        out[node.name] = {"bases": [ast.unparse(b) for b in node.bases], "attrs": attrs, "decorator": deco}
    return out


def _resolve(classes: dict[str, dict], name: str, key: str, seen: frozenset = frozenset()):
    c = classes.get(name)
    if c is None or name in seen:
        return None
    if key in c["attrs"]:
        return c["attrs"][key]
    for b in c["bases"]:
        v = _resolve(classes, b, key, seen | {name})
        if v is not None:
            return v
    return None


def _norm_system(system: str) -> tuple[str, bool]:
    base, _, tail = system.partition("_TRT")
    base = re.sub(r"^DGX-(Station-)?[AH]100_", "", base)
    return base, "triton" in tail.lower()


def config_paths(submitter: str) -> list[str]:
    return [f"closed/{submitter}/configs/{b}/{tail}" for b in sorted(set(CONFIG_BENCH.values()))
            for tail in ["__init__.py"] + [f"{sc}/{n}" for sc in SCENARIOS for n in ("__init__.py", "config.json")]]


def harness_config(repo_blobs: dict[str, str | None], submitter: str, system: str, benchmark: str,
                   scenario: str) -> dict:
    """The harness settings of one result (gpu_batch_size, precision, ...) from closed/<submitter>/configs."""
    base, triton = _norm_system(system)
    bench = CONFIG_BENCH[benchmark]
    high = benchmark == "bert-99.9"
    json_path = f"closed/{submitter}/configs/{bench}/{scenario}/config.json"
    if repo_blobs.get(json_path):  # v0.7 / v1.0: one JSON per benchmark and scenario, keyed by system id
        doc = json.loads(repo_blobs[json_path])
        entry = doc.get(base)
        if not isinstance(entry, dict):
            return {}
        cfg = {k: entry.get(k) for k in CONFIG_KEYS if entry.get(k) is not None}
        ver = ("high_accuracy_" if high else "") + ("triton" if triton else "")
        ver = ver.rstrip("_") or None
        if ver:
            cfg.update({k: v for k, v in (entry.get("config_ver") or {}).get(ver, {}).items() if k in CONFIG_KEYS})
        return {"where": f"{json_path} [{base!r}" + (f", config_ver {ver!r}]" if ver else "]"), **cfg}
    py_path = f"closed/{submitter}/configs/{bench}/{scenario}/__init__.py"
    classes = _py_classes(repo_blobs.get(f"closed/{submitter}/configs/{bench}/__init__.py"))
    classes.update(_py_classes(repo_blobs.get(py_path)))
    name = base.replace("-", "_") + ("_HighAccuracy" if high else "") + ("_Triton" if triton else "")
    if name not in classes or "MaxQ" in classes[name]["decorator"]:
        return {}
    cfg = {}
    for k in CONFIG_KEYS:
        v = _resolve(classes, name, k)
        if isinstance(v, dict):  # v4.1 writes gpu_batch_size = {'resnet50': 2048}
            v = v.get(bench, next(iter(v.values()), None)) if len(v) == 1 or bench in v else None
        if v is not None:
            cfg[k] = v
    return {"where": f"{py_path} class {name}", **cfg}


def precision_of(gpu: str, benchmark: str) -> tuple[str, list[str]]:
    """INT8 for resnet50 and bert-99 (NVIDIA's GPUBaseConfig precision); bert-99.9 FP16, FP8 on Hopper."""
    if benchmark != "bert-99.9":
        return "int8", []
    if gpu in ("h100-sxm", "h100-pcie", "h100-nvl", "h200"):
        return "fp8", ["hopper-fp8"]
    return "fp16", []


def mirror_inputs(repo: str) -> tuple[str, str, list[str], dict[str, str | None]]:
    """(round, commit, result-summary paths, blobs) of one mirrored inference_results_vX repository at HEAD."""
    round_ = re.search(r"inference_results_(v[\d.]+)", repo).group(1)
    commit = git(repo, "rev-parse", "HEAD").strip()
    files = git(repo, "ls-tree", "-r", "--name-only", "HEAD", "closed/").splitlines()
    perf = [f for f in files if is_perf_summary(f)]
    systems = sorted({system_json_of(f) for f in perf})
    configs = [c for sub in sorted({f.split("/")[1] for f in perf}) for c in config_paths(sub)]
    return round_, commit, perf, cat_files(repo, perf + systems + configs)


def extract_inputs(path: str) -> list[tuple[str, str, list[str], dict[str, str | None]]]:
    """The same, per round, from mlperf_index_extract.yaml (files read one by one, lines kept verbatim)."""
    with open(path) as fh:
        doc = yaml.safe_load(fh)
    rounds: dict[str, tuple[str, list[str], dict[str, str | None]]] = {}
    for e in doc["files"]:
        commit, perf, blobs = rounds.setdefault(e["round"], (e["commit"], [], {}))
        if e["commit"] != commit:
            raise SystemExit(f"{path}: {e['path']}: round {e['round']} mixes commits {commit} and {e['commit']}")
        if "json" in e:
            blobs[e["path"]] = json.dumps(e["json"])
        else:
            if not is_perf_summary(e["path"]):
                raise SystemExit(f"{path}: {e['path']} is not a results/.../performance/run_1 summary")
            perf.append(e["path"])
            blobs[e["path"]] = e["text"]
    return [(r, c, p, b) for r, (c, p, b) in rounds.items()]


def is_perf_summary(f: str) -> bool:
    p = f.split("/")
    return (len(p) == 9 and p[2] == "results" and p[4] in MODEL_DIRS and p[5] in SCENARIOS
            and p[6:] == ["performance", "run_1", "mlperf_log_summary.txt"] and not SKIP_SYSTEM.search(p[3]))


def system_json_of(f: str) -> str:
    return f"closed/{f.split('/')[1]}/systems/{f.split('/')[3]}.json"


def mlperf_records(round_: str, commit: str, perf: list[str], blobs: dict[str, str | None], sources: dict,
                   extra_notes: list[str]) -> list[dict]:
    src = f"mlperf-{round_}"
    sources[src] = {"kind": "mlperf-inference", "round": round_, "division": "closed",
                    "repo": f"mlcommons/inference_results_{round_}", "commit": commit}
    records = []
    for f in perf:
        _, submitter, _, system, benchmark, scenario = f.split("/")[:6]
        sysjson = json.loads(blobs.get(system_json_of(f)) or "{}")
        acc = sysjson.get("accelerator_model_name")
        gpu = gpu_of(acc)
        if gpu is None or (submitter != "NVIDIA" and round_ not in OEM_ROUNDS.get(gpu, ())):
            continue
        text = blobs[f] or ""
        hl = headline(text, scenario)
        if hl is None or not re.search(r"^Result is\s*:\s*VALID", text, re.M):
            continue
        value, unit, printed = hl
        n = int(sysjson.get("accelerators_per_node") or 1) * int(sysjson.get("number_of_nodes") or 1)
        throughput = unit == "samples/s"
        precision, notes = precision_of(gpu, benchmark)
        notes += extra_notes
        try:
            cfg = harness_config(blobs, submitter, system, benchmark, scenario)
        except SyntaxError:  # a submitter's config file that does not parse: no batch, rule precision
            cfg = {}
        if cfg.get("precision"):
            p = "fp8" if cfg["precision"] == "fp16" and cfg.get("use_fp8") else cfg["precision"]
            if p != precision:
                if submitter == "NVIDIA":
                    raise SystemExit(f"{round_} {f}: config precision {p} != expected {precision}; check the rule")
                precision, notes = p, [n for n in notes if n != "hopper-fp8"] + ["precision-from-config"]
        elif submitter != "NVIDIA":
            notes.append("precision-assumed")
        harness = "triton" if "triton" in system.lower() else "tensorrt"
        notes += ["triton"] if harness == "triton" else []
        notes += ["oem"] if submitter != "NVIDIA" else []
        notes += ["arm-host"] if "aarch64" in system else []
        if gpu.startswith("jetson"):
            notes += ["orin-32gb"] if gpu == "jetson-agx-orin-32gb" else []
            notes += ["orin-64gb"] if gpu == "jetson-agx-orin-64gb" else []
            dla = benchmark == "resnet50" and scenario == "Offline" and "DLA" in (sysjson.get("hw_notes") or "")
            notes.append("jetson-gpu-dla" if dla else "jetson-gpu-only")
        if benchmark.startswith("bert"):
            notes.append("varseqlen")
        if gpu == "h200" and round_ == "v4.1" and benchmark.startswith("bert") and submitter == "NVIDIA":
            notes.append("vboost")
        if gpu.startswith("jetson"):
            dla_used = "jetson-gpu-dla" in notes
        rec = {
            "id": f"{src}/{submitter}/{system}/{benchmark}/{scenario}",
            "model": MODEL_DIRS[benchmark], "gpu": gpu, "precision": precision, "scenario": SCENARIOS[scenario],
            "statistic": "throughput" if throughput else "p90",
            "value": round(value / n, 4) if throughput else value, "unit": unit,
            "batch": 1 if scenario == "SingleStream" else None,
            "per_accelerator": True, "divisor": n if throughput else 1, "system_value": value, "printed": printed,
            "accelerators": n, "accelerator_name": acc, "benchmark": benchmark, "harness": harness,
            "submitter": submitter, "system": system, "software": sysjson.get("framework"),
            "source": src, "path": f, "primary": False,
        }
        if gpu.startswith("jetson"):
            rec["dla"] = dla_used
        if cfg.get("gpu_batch_size") and scenario != "SingleStream":
            rec["batch"] = int(cfg["gpu_batch_size"])
            extra = f"; dla_batch_size {cfg['dla_batch_size']}" if rec.get("dla") and cfg.get("dla_batch_size") else ""
            rec["batch_source"] = f"{cfg['where']}: gpu_batch_size{extra}"
        if scenario != "Offline":
            stats = {}
            for key, rx in (("mean_ms", r"^Mean latency \(ns\)\s*:\s*(\d+)"),
                            ("p99_ms", r"^99\.00 percentile latency \(ns\)\s*:\s*(\d+)"),
                            ("early_stopping_p90_ms", r"Early stopping 90th percentile estimate:\s*(\d+)"),
                            ("server_latency_bound_ms", r"^target_latency \(ns\)\s*:\s*(\d+)")):
                v = stat(text, rx)
                if v is not None and (key != "server_latency_bound_ms" or scenario == "Server"):
                    stats[key] = v / 1e6
            rec["latency_stats"] = stats
        rec["notes"] = notes
        records.append(rec)
    return records


def mark_primary(records: list[dict]) -> None:
    def rank(r: dict) -> tuple:
        rnd = tuple(int(x) for x in r["source"].split("-v")[1].split("."))
        return (r["submitter"] == "NVIDIA", rnd, r["harness"] == "tensorrt", "aarch64" not in r["system"],
                -r["accelerators"])
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["gpu"], r["benchmark"], r["scenario"]), []).append(r)
    for rs in groups.values():
        max(rs, key=rank)["primary"] = True


def trt_records(repo: str, sources: dict) -> list[dict]:
    records = []
    newest: dict[str, str] = {}
    for ref, heading, gpu, note in TRT_TABLES:
        commit = git(repo, "rev-parse", f"{ref}^{{commit}}").strip()
        text = git(repo, "show", f"{commit}:demo/BERT/README.md")
        version = re.search(r"\|TensorRT\|([\d.]+)\|", text)
        src = f"trt-bert-demo-{ref.replace('release/', 'release-')}"
        sources[src] = {"kind": "tensorrt-bert-demo", "release": ref, "repo": "NVIDIA/TensorRT", "commit": commit,
                        "path": "demo/BERT/README.md",
                        "tested_with": f"TensorRT {version.group(1)}" if version else None}
        lines = text.splitlines()
        start = next(i for i, ln in enumerate(lines)
                     if re.match(r"^#{3,4} Inference [Pp]erformance:? " + heading, ln.strip()))
        sub = None
        for i in range(start + 1, len(lines)):
            ln = lines[i]
            if re.match(r"^#{2,4} ", ln):
                break
            m = re.match(r"^#####\s+(.*)$", ln)
            if m:
                sub = m.group(1).strip().lower()
                continue
            cells = [c.strip() for c in ln.strip().strip("|").split("|")]
            if sub != "bert large" or len(cells) != 8 or cells[0] != "384":
                continue
            batch = int(cells[1])
            for precision, (p95, p99, avg) in (("int8", cells[2:5]), ("fp16", cells[5:8])):
                records.append({
                    "id": f"{src}/{gpu}/{precision}/b{batch}",
                    "model": "bert-large-384", "gpu": gpu, "precision": precision, "scenario": "batch-latency",
                    "statistic": "mean", "value": float(avg), "unit": "ms", "batch": batch,
                    "per_accelerator": True, "divisor": 1, "system_value": float(avg), "printed": ln.strip(),
                    "accelerators": 1, "accelerator_name": lines[start].lstrip("#").strip(),
                    "benchmark": "tensorrt-demo-bert-large", "harness": "tensorrt-demo", "submitter": "NVIDIA",
                    "system": None, "software": sources[src]["tested_with"],
                    "source": src, "path": "demo/BERT/README.md", "line": i + 1, "primary": False,
                    "latency_stats": {"p95_ms": float(p95), "p99_ms": float(p99)},
                    "notes": ["trt-padded", "trt-plugins"] + ([note] if note else []),
                })
        newest[gpu] = src
    for r in records:  # the newest table per GPU is primary
        r["primary"] = r["source"] == newest[r["gpu"]]
    return records


HEADER = """\
# Published GPU inference figures: MLPerf Inference (closed division) and NVIDIA's TensorRT BERT demo tables.
# Generated by bench/data/make_published_yaml.py from git mirrors of the public repositories; do not edit by
# hand. Every record names its source (repository + commit), the file path (and line) and the figure exactly
# as printed; `value` is per accelerator (system_value / divisor). How each figure was read, the selection
# rules and the caveats: bench/data/README.md. Load and validate with bench/published.py.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mlperf", action="append", default=[], help="git dir of mlcommons/inference_results_vX")
    ap.add_argument("--extract", action="append", default=[],
                    help="mlperf_index_extract.yaml: lines of result files read one by one (unmirrorable rounds)")
    ap.add_argument("--tensorrt", help="git dir of NVIDIA/TensorRT")
    a = ap.parse_args()
    sources: dict[str, dict] = {}
    records: list[dict] = []
    for repo in a.mlperf:
        records.extend(mlperf_records(*mirror_inputs(repo), sources, []))
    for path in a.extract:
        for inputs in extract_inputs(path):
            records.extend(mlperf_records(*inputs, sources, ["index-extract"]))
    mark_primary(records)
    if a.tensorrt:
        records.extend(trt_records(a.tensorrt, sources))
    records.sort(key=lambda r: (r["model"], r["gpu"], r["scenario"], r["precision"], not r["primary"],
                                r["source"], r["batch"] or 0, r["id"]))
    used = {r["source"] for r in records}
    out = [HEADER, "format: 1\n", "sources:\n"]
    for key, src in sources.items():
        if key not in used:
            continue
        out.append(f"  {key}: " + yaml.safe_dump(src, default_flow_style=True, sort_keys=False, width=10**6))
    out.append("notes:\n")
    for key, text in NOTES.items():
        out.append(f"  {key}: " + yaml.safe_dump(text, default_flow_style=True, width=10**6).replace("\n...", ""))
    out.append("records:\n")
    for r in records:
        out.append("- " + yaml.safe_dump(r, default_flow_style=True, sort_keys=False, width=10**6))
    sys.stdout.write("".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
