"""A model repository: every model under a folder, its versions, and which versions are served.

    repo/
      mlp/                  one version (version 1): a bundle, or a folder holding one model file
      resnet/
        config.yaml         optional: version_policy, profile, device, backend, threads, batch, options
        1/   2/   3/        integer version folders (Triton's layout), each a bundle or a folder with a model file
      text.onnx             a lone model file: model 'text', version 1

Version policy as Triton's: ``latest: N`` (the N highest versions; the default is ``latest: 1``), ``all``, or
``specific: [1, 3]``. Requests without a version go to the highest served version.

``scan()`` only reads the folders (no model is opened); ``signature()`` says whether a version's files changed
since it was loaded (``--model-control poll``). ``check_memory()`` refuses a model that does not fit the device
before it is loaded, with the arithmetic.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._yamlfile import read_mapping
from ..bundle import is_bundle
from ..errors import MemoryBudgetError, UserError

log = logging.getLogger(__name__)

MODEL_FILE_SUFFIXES = (".onnx", ".pt", ".pth", ".ts", ".pt2")
MODEL_CONFIG = "config.yaml"
#: per-model keys a repository's ``name/config.yaml`` may hold (the server file's model keys, no name/path)
MODEL_SETTING_KEYS = ("profile", "device", "backend", "threads", "batch", "options", "version_policy")


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model are served: ``latest`` N, ``all``, or ``specific`` versions."""

    kind: str = "latest"
    count: int = 1
    versions: tuple[int, ...] = ()

    @classmethod
    def parse(cls, value: Any, where: str = "version_policy") -> VersionPolicy:
        """``latest`` / ``{latest: 2}`` / ``{latest: {num_versions: 2}}`` / ``all`` / ``{all: {}}`` /
        ``{specific: [1, 3]}`` / ``{specific: {versions: [1, 3]}}``."""
        if value is None or isinstance(value, VersionPolicy):
            return value or cls()
        if isinstance(value, str) and value in ("latest", "all"):
            return cls(kind=value)
        if isinstance(value, Mapping) and len(value) == 1:
            kind, arg = next(iter(value.items()))
            if kind == "all" and arg in (None, {}, True):
                return cls(kind="all")
            if kind == "latest":
                n = arg.get("num_versions") if isinstance(arg, Mapping) else arg
                if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
                    return cls(kind="latest", count=n)
                raise UserError(f"{where}.latest: expected a number of versions >= 1, got {n!r}")
            if kind == "specific":
                vs = arg.get("versions") if isinstance(arg, Mapping) else arg
                if isinstance(vs, list) and vs and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                       for v in vs):
                    return cls(kind="specific", versions=tuple(sorted(set(vs))))
                raise UserError(f"{where}.specific: expected a list of version numbers >= 1, got {vs!r}")
        raise UserError(f"{where}: expected 'latest', 'all', {{latest: N}} or {{specific: [1, 3]}}, got {value!r}")

    def select(self, versions: Iterable[int]) -> list[int]:
        found = sorted(set(versions))
        if self.kind == "all":
            return found
        if self.kind == "specific":
            return [v for v in found if v in self.versions]
        return found[-self.count:]

    def to_triton(self) -> dict[str, Any]:
        """The ``version_policy`` of Triton's model configuration."""
        if self.kind == "all":
            return {"all": {}}
        if self.kind == "specific":
            return {"specific": {"versions": list(self.versions)}}
        return {"latest": {"num_versions": self.count}}

    def __str__(self) -> str:
        return {"all": "all", "specific": f"specific {list(self.versions)}"}.get(self.kind, f"latest {self.count}")


@dataclasses.dataclass
class RepoModel:
    """One model found in a repository (or named on the command line): its versions and settings."""

    name: str
    versions: dict[int, Path]  # every loadable version found
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # profile, device, batch, ...
    policy: VersionPolicy = dataclasses.field(default_factory=VersionPolicy)
    problems: dict[str, str] = dataclasses.field(default_factory=dict)  # version folder -> why it is skipped
    policy_file: str | None = None  # a seed-style batch config.yaml (command-line bundles only)

    def selected(self) -> dict[int, Path]:
        return {v: self.versions[v] for v in self.policy.select(self.versions)}


def model_source(folder: Path) -> Path | None:
    """What to load from a version folder: the folder itself when it is a bundle, else its one model file
    (``model.onnx`` when there are several); None when it holds neither."""
    if is_bundle(folder):
        return folder
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MODEL_FILE_SUFFIXES)
    except OSError:
        return None
    if len(files) == 1:
        return files[0]
    for p in files:
        if p.stem == "model":
            return p
    return None


def _version_number(name: str) -> int | None:
    return int(name) if name.isdigit() and not (len(name) > 1 and name.startswith("0")) else None


def is_repository(path: str | os.PathLike[str]) -> bool:
    """A folder that is not itself a bundle (nor a folder holding one model file): a model repository."""
    p = Path(path)
    return p.is_dir() and model_source(p) is None


def read_model(folder: Path, *, default_policy: VersionPolicy | None = None) -> RepoModel | None:
    """One model folder of a repository (None when it holds no model at all)."""
    name = folder.name
    settings: dict[str, Any] = {}
    cfg = folder / MODEL_CONFIG
    if cfg.is_file() and not is_bundle(folder):
        settings = dict(read_mapping(cfg, what="a mapping of model settings"))
        unknown = sorted(set(settings) - set(MODEL_SETTING_KEYS))
        if unknown:
            raise UserError(f"{cfg}: unknown key(s) {', '.join(unknown)} (a model's config.yaml may hold "
                            f"{', '.join(MODEL_SETTING_KEYS)})")
    policy = VersionPolicy.parse(settings.pop("version_policy", None), f"{cfg}: version_policy") \
        if "version_policy" in settings else (default_policy or VersionPolicy())
    src = model_source(folder)
    if src is not None:
        return RepoModel(name, {1: src}, settings, policy)
    versions: dict[int, Path] = {}
    problems: dict[str, str] = {}
    for sub in sorted(folder.iterdir()):
        if not sub.is_dir() or sub.name.startswith("."):
            continue
        v = _version_number(sub.name)
        if v is None:
            problems[sub.name] = "not a version folder (versions are whole numbers: 1, 2, ...)"
            continue
        src = model_source(sub)
        if src is None:
            problems[sub.name] = "holds no bundle (xinfer.yaml) and no single model file (.onnx, .pt, ...)"
            continue
        versions[v] = src
    if not versions and not problems:
        return None
    return RepoModel(name, versions, settings, policy, problems)


def scan(root: str | os.PathLike[str], *, default_policy: VersionPolicy | None = None) -> dict[str, RepoModel]:
    """Every model under ``root``: ``name/`` (one version), ``name/<version>/`` or a lone ``name.onnx``."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"model repository {str(root)!r} is not a folder")
    found: dict[str, RepoModel] = {}
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in MODEL_FILE_SUFFIXES:
            found[p.stem] = RepoModel(p.stem, {1: p}, {}, default_policy or VersionPolicy())
        elif p.is_dir():
            m = read_model(p, default_policy=default_policy)
            if m is not None:
                found[m.name] = m
    return found


def signature(path: Path) -> tuple:
    """(relative path, size, mtime) of every file of a version: a changed tuple means reload it."""
    if path.is_file():
        st = path.stat()
        return ((path.name, st.st_size, st.st_mtime_ns),)
    out = []
    for dirpath, _dirs, files in os.walk(path):
        for f in sorted(files):
            full = Path(dirpath, f)
            try:
                st = full.stat()
            except OSError:  # removed while we walked: the next poll sees the settled state
                continue
            out.append((str(full.relative_to(path)), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


# -- memory budget ------------------------------------------------------------------------------------------
def _size(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def memory_need(path: Path, *, profile: Any, max_batch: int, workers: int) -> dict[str, Any] | None:
    """The planner's memory estimate for a bundle on ``profile``: weights + activations at ``max_batch`` for
    ``workers`` engine instances, against the profile's usable memory. None when the graph cannot be sized."""
    from ..bundle import open_bundle
    from ..planning.cost import build_curve
    from ..planning.planner import bundle_shapes, memory_fit

    try:
        if is_bundle(path):
            bundle = open_bundle(path, verify=False)
            onnx_path, shapes = bundle.model_file, bundle_shapes(bundle.manifest)
        elif path.suffix.lower() == ".onnx":
            onnx_path, shapes = path, {}
        else:
            return None
        curve = build_curve(onnx_path, shapes=shapes)
    except Exception as exc:  # a graph the cost model cannot walk: load it, the device will tell
        log.info("%-28s | memory not estimated (%s)", f"repository[{path.name}]", exc)
        return None
    fit = memory_fit(profile, curve)
    b = max(1, max_batch) if curve.batched else 1
    copies = workers if fit.weights_per_worker else 1
    weights = fit.weights_bytes * copies
    acts = workers * (fit.activation_fixed + (fit.activation_per_sample + fit.io_per_sample) * b)
    return {"weights_bytes": weights, "activations_bytes": acts, "total_bytes": weights + acts, "batch": b,
            "workers": workers, "weight_copies": copies, "usable_bytes": fit.usable_bytes,
            "usable_basis": fit.usable_basis, "activation_fixed": fit.activation_fixed,
            "per_sample": fit.activation_per_sample + fit.io_per_sample, "batched": curve.batched}


def check_memory(name: str, est: Mapping[str, Any] | None, *, profile_name: str, device: str,
                 others: Mapping[str, float] | None = None) -> None:
    """Refuse (MemoryBudgetError, 400) a model whose estimate plus the models already on ``device`` exceeds the
    profile's usable memory; the message carries the arithmetic."""
    if est is None or est.get("usable_bytes") is None:
        return
    used = sum((others or {}).values())
    total = est["total_bytes"] + used
    if total <= est["usable_bytes"]:
        return
    line = (f"weights {_size(est['weights_bytes'])}"
            + (f" ({est['weight_copies']} copies, one per worker)" if est["weight_copies"] > 1 else "")
            + f" + activations {_size(est['activations_bytes'])} at batch {est['batch']} x {est['workers']} "
            f"worker(s) = {_size(est['total_bytes'])}")
    if used:
        line += f", + {_size(used)} for the models already on {device} ({', '.join(sorted(others or {}))})"
    line += f" > {_size(est['usable_bytes'])} usable on {device} (profile {profile_name}: {est['usable_basis']})"
    ideas = []
    w = est["workers"]
    room = est["usable_bytes"] - used - est["weights_bytes"] - w * est.get("activation_fixed", 0.0)
    per = w * est.get("per_sample", 0.0)
    if est.get("batched") and per > 0 and room >= per:
        ideas.append(f"max_batch_size {int(room // per)} or less (batch: {{max_batch_size: N}})")
    if est["workers"] > 1:
        ideas.append("fewer workers (device_concurrency)")
    ideas.append("a lower precision build (int8 / fp16), or another device")
    raise MemoryBudgetError(f"model {name!r} does not fit the device memory: {line}", hint="try " + ", or ".join(ideas),
                            details={"memory_budget": dict(est, others_bytes=used)})


__all__ = ["VersionPolicy", "RepoModel", "scan", "read_model", "is_repository", "model_source", "signature",
           "memory_need", "check_memory"]
