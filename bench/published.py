"""Published GPU inference figures, loaded and validated: the yardstick the GPU device model is fitted to.

The data is bench/data/published_gpu_results.yaml (how every figure was read: bench/data/README.md). Each
record is one figure exactly as a public source printed it, with its per-accelerator value:

    from published import load, select            # bench/ is on sys.path when a bench script runs
    rows = select(load(), model="resnet50", scenario="offline")          # primary records only
    for r in rows:
        print(r.gpu, r.precision, r.samples_per_s, r.url)

`select(..., primary_only=True)` (the default) keeps one record per GPU, benchmark and scenario for MLPerf
(NVIDIA before other submitters, newest round, raw TensorRT harness before Triton, fewest GPUs) and the newest
table per GPU for the TensorRT BERT demo. Malformed data raises `PublishedDataError` naming the file, the
record and the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from xinfer_sdk.errors import UserError

__all__ = [
    "DEFAULT_PATH", "MODELS", "PRECISIONS", "SCENARIOS", "WORK_PER_SAMPLE", "PublishedDataError",
    "PublishedResult", "Source", "load", "select",
]

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "published_gpu_results.yaml"
PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
MODELS = ("resnet50", "bert-large-384")
PRECISIONS = ("int8", "fp16", "fp8")
SCENARIOS = ("offline", "server", "single-stream", "batch-latency")
UNIT_OF = {"offline": "samples/s", "server": "samples/s", "single-stream": "ms", "batch-latency": "ms"}
STATISTIC_OF = {"offline": "throughput", "server": "throughput", "single-stream": "p90", "batch-latency": "mean"}
SOURCE_KINDS = {"mlperf-inference": "round", "tensorrt-bert-demo": "release"}
HARNESSES = ("tensorrt", "triton", "tensorrt-demo")

# Work per sample (multiply-accumulates); derivations in bench/data/README.md, "Work per sample".
WORK_PER_SAMPLE = MappingProxyType({
    "resnet50": {"gmac": 4.09, "input": "3x224x224",
                 "source": "https://pytorch.org/vision/stable/models/generated/torchvision.models.resnet50.html "
                           "(ResNet50_Weights.IMAGENET1K_V1: GFLOPS 4.09, counted as multiply-adds)"},
    "bert-large-384": {"gmac": 123.21, "input": "1x384 tokens, padded",
                       "source": "computed in bench/data/README.md: 24 layers x (12 d^2 x 384 + 2 x 384^2 x d), "
                                 "d=1024, plus the 1024x2 QA head"},
})

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "id": str, "model": str, "gpu": str, "precision": str, "scenario": str, "statistic": str,
    "value": (int, float), "unit": str, "per_accelerator": bool, "divisor": int, "system_value": (int, float),
    "printed": str, "accelerators": int, "benchmark": str, "harness": str, "submitter": str, "source": str,
    "path": str, "primary": bool, "notes": list,
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "batch": int, "batch_source": str, "accelerator_name": str, "system": str, "software": str, "line": int,
    "latency_stats": dict, "dla": bool,
}


class PublishedDataError(UserError):
    """The published-results file is missing or malformed (names the file, the record and the field)."""


@dataclass(frozen=True)
class Source:
    key: str
    kind: str  # mlperf-inference | tensorrt-bert-demo
    repo: str
    commit: str
    version: str  # MLPerf round (v3.0) or TensorRT git ref (v10.8.0, release/8.4)
    tested_with: str | None = None

    def url(self, path: str, line: int | None = None) -> str:
        return f"https://github.com/{self.repo}/blob/{self.commit}/{path}" + (f"#L{line}" if line else "")


@dataclass(frozen=True)
class PublishedResult:
    """One published figure. `value` is per accelerator; `system_value` is the figure as printed."""

    id: str
    model: str
    gpu: str
    precision: str
    scenario: str
    statistic: str
    value: float
    unit: str
    batch: int | None
    per_accelerator: bool
    divisor: int
    system_value: float
    printed: str
    accelerators: int
    benchmark: str
    harness: str
    submitter: str
    source: Source
    path: str
    primary: bool
    notes: tuple[str, ...]
    line: int | None = None
    system: str | None = None
    software: str | None = None
    accelerator_name: str | None = None
    dla: bool | None = None
    batch_source: str | None = None  # where the harness batch of an MLPerf record was read
    latency_stats: Mapping[str, float] = field(default_factory=dict)
    note_keys: tuple[str, ...] = ()  # the keys of ``notes`` (``notes`` holds their texts)

    @property
    def url(self) -> str:
        return self.source.url(self.path, self.line)

    @property
    def samples_per_s(self) -> float | None:
        """Per-accelerator throughput: the MLPerf figure, or batch / mean latency for a batch-latency row.

        None for single-stream, whose one-query-at-a-time rate is not a capacity."""
        if self.unit == "samples/s":
            return self.value
        if self.scenario == "batch-latency" and self.batch:
            return self.batch * 1000.0 / self.value
        return None

    @property
    def latency_ms(self) -> float | None:
        return self.value if self.unit == "ms" else None

    @property
    def round(self) -> str:
        return self.source.version

    def __repr__(self) -> str:
        return (f"PublishedResult({self.id!r}, {self.model}, {self.gpu}, {self.precision}, {self.scenario}, "
                f"{self.value:g} {self.unit})")


def _profile_names(profiles_dir: Path) -> frozenset[str]:
    return frozenset(p.stem for p in profiles_dir.glob("*.yaml") if not p.stem.startswith("_"))


def _fail(path: Path, where: str, msg: str) -> PublishedDataError:
    return PublishedDataError(f"{path}: {where}: {msg}",
                              hint="regenerate it with bench/data/make_published_yaml.py (bench/data/README.md)")


def _printed_number(printed: str, unit: str) -> float | None:
    """The figure inside an MLPerf summary line 'name : 123.4' (latencies are printed in ns)."""
    m = re.search(r":\s*([\d.e+]+)\s*$", printed)
    if not m:
        return None
    v = float(m.group(1))
    return v / 1e6 if unit == "ms" else v


def _check_record(path: Path, i: int, r: Any, sources: Mapping[str, Source], notes: Mapping[str, str],
                  gpus: frozenset[str]) -> PublishedResult:
    where = f"records[{i}]"
    if not isinstance(r, dict):
        raise _fail(path, where, f"expected a mapping, got {type(r).__name__}")
    where = f"records[{i}] ({r.get('id', '?')})"
    for key, typ in _REQUIRED.items():
        if key not in r:
            raise _fail(path, where, f"field '{key}' is missing")
        if not isinstance(r[key], typ) or (typ is int and isinstance(r[key], bool)):
            raise _fail(path, where, f"field '{key}' must be {getattr(typ, '__name__', typ)}, got {r[key]!r}")
    for key, typ in _OPTIONAL.items():
        if r.get(key) is not None and not isinstance(r[key], typ):
            raise _fail(path, where, f"field '{key}' must be {typ.__name__} or null, got {r[key]!r}")
    unknown = set(r) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise _fail(path, where, f"unknown field(s) {sorted(unknown)}")
    for key, allowed in (("model", MODELS), ("precision", PRECISIONS), ("scenario", SCENARIOS),
                         ("harness", HARNESSES)):
        if r[key] not in allowed:
            raise _fail(path, where, f"{key} '{r[key]}' is not one of {', '.join(allowed)}")
    if r["gpu"] not in gpus:
        raise _fail(path, where, f"gpu '{r['gpu']}' is not a profile name in {PROFILES_DIR}")
    if r["unit"] != UNIT_OF[r["scenario"]] or r["statistic"] != STATISTIC_OF[r["scenario"]]:
        raise _fail(path, where, f"scenario '{r['scenario']}' needs unit '{UNIT_OF[r['scenario']]}' and statistic "
                                 f"'{STATISTIC_OF[r['scenario']]}', got '{r['unit']}' / '{r['statistic']}'")
    value, sysval, div = float(r["value"]), float(r["system_value"]), r["divisor"]
    if not (value > 0 and math.isfinite(value)) or div < 1:
        raise _fail(path, where, f"value must be > 0 and divisor >= 1, got {value!r} / {div!r}")
    expect = sysval / div if r["unit"] == "samples/s" else sysval
    if not math.isclose(value, expect, rel_tol=1e-4):
        raise _fail(path, where, f"value {value} != system_value {sysval} / divisor {div}")
    if r["scenario"] in ("single-stream", "batch-latency") and not r.get("batch"):
        raise _fail(path, where, f"scenario '{r['scenario']}' needs a batch size")
    if r["harness"] == "tensorrt-demo":
        cells = [c.strip() for c in r["printed"].strip().strip("|").split("|")]
        col = {"int8": 4, "fp16": 7}.get(r["precision"])
        if len(cells) != 8 or col is None or float(cells[col]) != sysval or int(cells[1]) != r.get("batch"):
            raise _fail(path, where, f"printed row {r['printed']!r} does not hold batch {r.get('batch')} and "
                                     f"{r['precision']} average {sysval}")
    else:
        shown = _printed_number(r["printed"], r["unit"])
        if shown is None or not math.isclose(shown, sysval, rel_tol=1e-6):
            raise _fail(path, where, f"printed {r['printed']!r} does not show system_value {sysval}")
    if r["source"] not in sources:
        raise _fail(path, where, f"source '{r['source']}' is not in the file's sources")
    for n in r["notes"]:
        if not isinstance(n, str):
            raise _fail(path, where, f"notes must be strings, got {n!r}")
    stats = r.get("latency_stats") or {}
    if any(not isinstance(v, (int, float)) for v in stats.values()):
        raise _fail(path, where, "latency_stats values must be numbers")
    return PublishedResult(
        id=r["id"], model=r["model"], gpu=r["gpu"], precision=r["precision"], scenario=r["scenario"],
        statistic=r["statistic"], value=value, unit=r["unit"], batch=r.get("batch"),
        per_accelerator=r["per_accelerator"], divisor=div, system_value=sysval, printed=r["printed"],
        accelerators=r["accelerators"], benchmark=r["benchmark"], harness=r["harness"], submitter=r["submitter"],
        source=sources[r["source"]], path=r["path"], primary=r["primary"],
        notes=tuple(notes.get(n, n) for n in r["notes"]), line=r.get("line"), system=r.get("system"),
        software=r.get("software"), accelerator_name=r.get("accelerator_name"), dla=r.get("dla"),
        batch_source=r.get("batch_source"),
        latency_stats=MappingProxyType(dict(stats)), note_keys=tuple(r["notes"]),
    )


def _check_sources(path: Path, raw: Any) -> dict[str, Source]:
    if not isinstance(raw, dict) or not raw:
        raise _fail(path, "sources", "expected a non-empty mapping of source key -> {kind, repo, commit, ...}")
    out = {}
    for key, s in raw.items():
        if not isinstance(s, dict) or s.get("kind") not in SOURCE_KINDS:
            raise _fail(path, f"sources.{key}", f"kind must be one of {', '.join(SOURCE_KINDS)}")
        version_key = SOURCE_KINDS[s["kind"]]
        for f in ("repo", "commit", version_key):
            if not isinstance(s.get(f), str) or not s[f]:
                raise _fail(path, f"sources.{key}", f"field '{f}' is missing")
        if not re.fullmatch(r"[0-9a-f]{40}", s["commit"]):
            raise _fail(path, f"sources.{key}", f"commit must be 40 hex digits, got {s['commit']!r}")
        out[key] = Source(key=key, kind=s["kind"], repo=s["repo"], commit=s["commit"], version=s[version_key],
                          tested_with=s.get("tested_with"))
    return out


def load(path: str | Path = DEFAULT_PATH, *, profiles_dir: str | Path = PROFILES_DIR) -> list[PublishedResult]:
    """Read and validate the published-results YAML; return every record (primary or not)."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except OSError as exc:
        raise PublishedDataError(f"{path}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise _fail(path, "file", f"not valid YAML ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != 1:
        raise _fail(path, "format", "expected a mapping with 'format: 1'")
    sources = _check_sources(path, doc.get("sources"))
    notes = doc.get("notes") or {}
    if not isinstance(notes, dict) or not all(isinstance(v, str) for v in notes.values()):
        raise _fail(path, "notes", "expected a mapping of note key -> text")
    raw = doc.get("records")
    if not isinstance(raw, list) or not raw:
        raise _fail(path, "records", "expected a non-empty list")
    gpus = _profile_names(Path(profiles_dir))
    records = [_check_record(path, i, r, sources, notes, gpus) for i, r in enumerate(raw)]
    seen: dict[str, int] = {}
    primaries: dict[tuple, str] = {}
    for i, r in enumerate(records):
        if r.id in seen:
            raise _fail(path, f"records[{i}]", f"id '{r.id}' repeats records[{seen[r.id]}]")
        seen[r.id] = i
        if r.primary:
            key = (r.gpu, r.benchmark, r.scenario, r.precision, r.batch if r.scenario == "batch-latency" else None)
            if key in primaries:
                raise _fail(path, f"records[{i}] ({r.id})", f"second primary record for {key} "
                                                            f"(first: {primaries[key]})")
            primaries[key] = r.id
    return records


def select(records: Iterable[PublishedResult], *, model: str | None = None, gpu: str | Iterable[str] | None = None,
           precision: str | None = None, scenario: str | None = None, harness: str | None = None,
           primary_only: bool = True) -> list[PublishedResult]:
    """The records matching every given filter (a GPU filter may be one name or several)."""
    gpus = {gpu} if isinstance(gpu, str) else (set(gpu) if gpu is not None else None)
    return [r for r in records
            if (model is None or r.model == model) and (gpus is None or r.gpu in gpus)
            and (precision is None or r.precision == precision) and (scenario is None or r.scenario == scenario)
            and (harness is None or r.harness == harness) and (r.primary or not primary_only)]
