"""The bundle: a directory that carries a compiled model from CI to the target.

    my-model.xinfer/
      xinfer.yaml       manifest (this module's Manifest): IO spec, precision, profile used, batch policy,
                        artifacts with sha256, calibration provenance, accuracy report, engine build plan,
                        the steps that ran and the versions of every tool
      model.onnx        the deployable graph (FP32, FP16, or INT8 QDQ)
      reference.onnx    the FP32 graph the accuracy gate compared against (optional)
      engines/          TensorRT plans keyed by (compute capability, TensorRT version, precision, shapes), and
                        the timing cache beside them

``open_bundle`` verifies every checksum; paths in the manifest are relative and may not leave the bundle.
This module needs only numpy-free stdlib + pyyaml: the runtime on a Jetson reads bundles with it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .errors import BundleError

FORMAT_VERSION = 1
MANIFEST_NAME = "xinfer.yaml"
BUNDLE_SUFFIX = ".xinfer"
# artifacts the runtime can rebuild on the target: a bad one is rebuilt, not a reason to refuse the bundle
REBUILDABLE_ROLES = ("engine", "timing_cache")

# numpy dtype name <-> KServe v2 / Triton datatype
KSERVE_DTYPES = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64", "int8": "INT8",
    "int16": "INT16", "int32": "INT32", "int64": "INT64", "float16": "FP16", "float32": "FP32", "float64": "FP64",
    "bytes": "BYTES",
}
NUMPY_DTYPES = {v: k for k, v in KSERVE_DTYPES.items()}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One model input or output. ``shape`` holds ints for fixed dims and -1 for dynamic ones.

    When the model batches (``Manifest.max_batch_size > 0``), ``batch_axis`` is the axis requests are stacked
    and split along (always -1 in ``shape``): 0 for most tensors, another axis for e.g. a recurrent state
    ``[2, batch, 128]``, None for a tensor without one (a scalar sample rate): such an input must be equal in
    requests that share a batch. Manifests written before the field existed mean 0."""

    name: str
    dtype: str  # numpy dtype name: float32, float16, int64, bool, ...
    shape: tuple[int, ...]
    dim_names: tuple[str | None, ...] = ()  # symbolic names of dynamic dims ("batch", "seq"), None for fixed
    batch_axis: int | None = 0

    @property
    def kserve_dtype(self) -> str:
        return KSERVE_DTYPES.get(self.dtype, self.dtype.upper())

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if any(self.dim_names):
            d["dim_names"] = list(self.dim_names)
        if self.batch_axis != 0:
            d["batch_axis"] = self.batch_axis
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        shape = tuple(int(x) for x in d["shape"])
        names = tuple(d.get("dim_names") or (None,) * len(shape))
        axis = d.get("batch_axis", 0) if shape else None  # a scalar has no batch axis
        if axis is not None:
            axis = int(axis)
            if not -len(shape) <= axis < len(shape):
                raise ValueError(f"{d['name']}: batch_axis {axis} is outside its shape {list(shape)}")
            axis %= len(shape)
        return cls(name=str(d["name"]), dtype=str(d["dtype"]), shape=shape, dim_names=names, batch_axis=axis)


@dataclasses.dataclass
class Artifact:
    path: str  # relative to the bundle root, '/'-separated
    sha256: str
    bytes: int
    role: str = ""  # model | reference | engine | timing_cache | calibration | other
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"path": self.path, "sha256": self.sha256, "bytes": self.bytes, "role": self.role}
        if self.meta:
            d["meta"] = self.meta
        return d


@dataclasses.dataclass
class StepResult:
    """One conversion step as it ran: ok / failed / skipped, with the reason and how long it took."""

    name: str
    status: str  # ok | failed | skipped
    seconds: float = 0.0
    message: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "status": self.status, "seconds": round(self.seconds, 3), "message": self.message}
        if self.details:
            d["details"] = self.details
        return d


@dataclasses.dataclass
class Manifest:
    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    precision: str
    max_batch_size: int  # 0 = the model does not batch (no batch axis)
    profile: dict[str, Any]  # {"name": ..., "resolved": Profile.to_dict()}
    batch: dict[str, Any]  # BatchPolicy.to_dict()
    artifacts: dict[str, Artifact] = dataclasses.field(default_factory=dict)  # key: path
    source: dict[str, Any] = dataclasses.field(default_factory=dict)  # original model: path, format, sha256
    calibration: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None
    engine_plan: dict[str, Any] | None = None
    steps: list[StepResult] = dataclasses.field(default_factory=list)
    tools: dict[str, str] = dataclasses.field(default_factory=dict)
    created: str = ""
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    # padded batching (docs/batching.md): {"inputs": {name: {"axis": a, "value": v}}, "buckets": [...],
    # "outputs": {name: axis}}; None = only requests of equal shapes are merged
    padding: dict[str, Any] | None = None

    # -- lookups ---------------------------------------------------------------------------------------
    def artifacts_by_role(self, role: str) -> list[Artifact]:
        return [a for a in self.artifacts.values() if a.role == role]

    def engine_layer_precisions(self) -> dict[str, dict[str, Any]]:
        """Per engine artifact, the layer-precision summary recorded at its build (``meta.layer_precisions``:
        counts per precision from TensorRT's engine inspector and the verdict against the bundle's precision)."""
        return {a.path: dict(a.meta["layer_precisions"]) for a in self.artifacts_by_role("engine")
                if isinstance(a.meta.get("layer_precisions"), Mapping)}

    @property
    def model_path(self) -> str:
        models = self.artifacts_by_role("model")
        if not models:
            raise BundleError(f"bundle {self.name!r} lists no artifact with role 'model' in {MANIFEST_NAME}")
        return models[0].path

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version, "name": self.name, "created": self.created,
            "precision": self.precision, "max_batch_size": self.max_batch_size,
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "profile": self.profile, "batch": self.batch,
            "artifacts": [a.to_dict() for a in sorted(self.artifacts.values(), key=lambda a: a.path)],
            "source": self.source, "calibration": self.calibration, "accuracy": self.accuracy,
            "engine_plan": self.engine_plan, "steps": [s.to_dict() for s in self.steps], "tools": self.tools,
            "extra": self.extra, **({"padding": self.padding} if self.padding else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = MANIFEST_NAME) -> Manifest:
        try:
            version = int(d.get("format_version", 0))
            if version > FORMAT_VERSION:
                raise BundleError(f"{where}: bundle format {version} is newer than this xinfer-sdk understands "
                                  f"({FORMAT_VERSION})", hint="upgrade xinfer-sdk on this machine")
            arts = {}
            for a in d.get("artifacts") or []:
                art = Artifact(path=str(a["path"]), sha256=str(a["sha256"]), bytes=int(a["bytes"]),
                               role=str(a.get("role", "")), meta=dict(a.get("meta") or {}))
                arts[art.path] = art
            return cls(
                name=str(d["name"]), inputs=[TensorSpec.from_dict(t) for t in d["inputs"]],
                outputs=[TensorSpec.from_dict(t) for t in d["outputs"]], precision=str(d["precision"]),
                max_batch_size=int(d.get("max_batch_size", 0)), profile=dict(d.get("profile") or {}),
                batch=dict(d.get("batch") or {}), artifacts=arts, source=dict(d.get("source") or {}),
                calibration=d.get("calibration"), accuracy=d.get("accuracy"), engine_plan=d.get("engine_plan"),
                steps=[StepResult(**{k: v for k, v in s.items()}) for s in d.get("steps") or []],
                tools=dict(d.get("tools") or {}), created=str(d.get("created", "")), format_version=version,
                extra=dict(d.get("extra") or {}), padding=dict(d["padding"]) if d.get("padding") else None,
            )
        except BundleError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})",
                              hint="rebuild the bundle with `xinfer-sdk build`") from None


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _safe_rel(root: Path, rel: str) -> Path:
    """Resolve a manifest path inside the bundle; refuse absolute paths and any that leave it."""
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or rel.startswith(("/", "\\")):
        raise BundleError(f"artifact path {rel!r} leaves the bundle; manifest paths must be relative and inside it")
    full = (root / p).resolve()
    if root.resolve() not in full.parents and full != root.resolve():
        raise BundleError(f"artifact path {rel!r} resolves outside the bundle ({full})")
    return full


@dataclasses.dataclass
class Bundle:
    """An opened bundle: its root folder and verified manifest."""

    root: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    def path(self, rel: str) -> Path:
        return _safe_rel(self.root, rel)

    @property
    def model_file(self) -> Path:
        return self.path(self.manifest.model_path)

    @property
    def engines_dir(self) -> Path:
        return self.root / "engines"

    def engines_writable(self) -> bool:
        """False on a read-only bundle (a Kubernetes readOnly mount): engines then go to the user cache."""
        try:
            self.engines_dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.engines_dir, os.W_OK) and os.access(self.root, os.W_OK)

    def add_artifact(self, file: str | os.PathLike[str], *, role: str, meta: dict[str, Any] | None = None) -> Artifact:
        """Register a file already inside the bundle (e.g. an engine built on the target) and save."""
        full = Path(file).resolve()
        rel = full.relative_to(self.root.resolve()).as_posix()
        _safe_rel(self.root, rel)
        art = Artifact(path=rel, sha256=sha256_file(full), bytes=full.stat().st_size, role=role, meta=meta or {})
        self.manifest.artifacts[rel] = art
        save_manifest(self.root, self.manifest)
        return art

    def verify(self, *, roles: Sequence[str] | None = None, skip_roles: Sequence[str] = ()) -> None:
        for art in self.manifest.artifacts.values():
            if (roles is not None and art.role not in roles) or art.role in skip_roles:
                continue
            full = self.path(art.path)
            if not full.is_file():
                raise BundleError(f"bundle {self.root}: artifact {art.path!r} is missing",
                                  hint="the bundle is incomplete; copy it again or rebuild it")
            if full.stat().st_size != art.bytes or sha256_file(full) != art.sha256:
                raise BundleError(f"bundle {self.root}: checksum mismatch for {art.path!r} (the file was changed or "
                                  "truncated after the build)", hint="rebuild the bundle or copy it again")


def save_manifest(root: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write xinfer.yaml atomically (a reader never sees half a manifest)."""
    root = Path(root)
    if not manifest.created:
        manifest.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    text = yaml.safe_dump(manifest.to_dict(), sort_keys=False, default_flow_style=None, width=120)
    fd, tmp = tempfile.mkstemp(prefix=".xinfer.", suffix=".yaml", dir=root)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    target = root / MANIFEST_NAME
    os.replace(tmp, target)
    return target


def register(root: str | os.PathLike[str], manifest: Manifest, rel: str, *, role: str,
             meta: dict[str, Any] | None = None) -> Artifact:
    """Checksum a file written into the bundle folder and record it in the manifest (not yet saved)."""
    root = Path(root)
    full = _safe_rel(root, rel)
    art = Artifact(path=Path(rel).as_posix(), sha256=sha256_file(full), bytes=full.stat().st_size, role=role,
                   meta=meta or {})
    manifest.artifacts[art.path] = art
    return art


def open_bundle(path: str | os.PathLike[str], *, verify: bool = True) -> Bundle:
    """Open and (by default) verify a bundle folder. Raises BundleError with what is wrong and what to do."""
    root = Path(path)
    if root.is_file() and root.name == MANIFEST_NAME:
        root = root.parent
    if not root.exists():
        raise BundleError(f"no bundle at {str(root)!r}", hint="build one with `xinfer-sdk build MODEL -o DIR`")
    mf = root / MANIFEST_NAME
    if not root.is_dir() or not mf.is_file():
        raise BundleError(f"{str(root)!r} is not a bundle (no {MANIFEST_NAME} inside)",
                          hint="pass the folder `xinfer-sdk build` wrote, or a model file to build one on the fly")
    try:
        data = yaml.safe_load(mf.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise BundleError(f"{mf}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, Mapping):
        raise BundleError(f"{mf}: expected a mapping at the top level")
    bundle = Bundle(root=root, manifest=Manifest.from_dict(data, where=str(mf)))
    if verify:
        # engine plans are caches the TensorRT backend checks itself and rebuilds when stale or corrupt
        bundle.verify(skip_roles=REBUILDABLE_ROLES)
    else:
        bundle.path(bundle.manifest.model_path)
    return bundle


def is_bundle(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.is_dir() and (p / MANIFEST_NAME).is_file()
