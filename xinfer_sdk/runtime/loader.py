"""``xs.load()``: open a bundle (or a raw model file), pick profile, device, backend and batch policy."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._yamlfile import read_mapping
from ..bundle import Artifact, Bundle, Manifest, TensorSpec, is_bundle, open_bundle, sha256_file
from ..errors import BackendUnavailable, BundleError, ConversionError, UserError, XinferError
from ..policy import BatchPolicy
from ..profiles import Profile, ProfileRegistry, detect, load_profile, read_host
from .axes import with_batch_axes
from .backends.base import normalize_device
from .backends.select import ALIASES, choose
from .devices import engine_device, parse_devices
from .keys import check_keys, check_options
from .model import Model
from .sequence import SequenceSpec
from .sequence import resolve as resolve_sequence

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(int64)": "int64",
    "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64", "tensor(bool)": "bool",
    "tensor(string)": "bytes",
}


def resolve_profile(profile: str | Profile | None, *, profiles_dirs: Sequence[str] = (),
                    overrides: Sequence[str] = ()) -> Profile:
    if isinstance(profile, Profile):
        return profile
    if profile in (None, "", "auto"):
        name = detect(ProfileRegistry(profiles_dirs)).profile
        return load_profile(name, profiles_dirs=profiles_dirs, overrides=overrides)
    return load_profile(profile, profiles_dirs=profiles_dirs, overrides=overrides)


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A config.yaml with batch-policy keys (the seed's batch_size / max_batch_delay / device_concurrency /
    max_workers, or ours), at the top level or under ``batch:``. A ``sequence:`` section is read by
    ``read_sequence_config``."""
    p = Path(path)
    data = read_mapping(p, what="a mapping of batch-policy keys")
    section = data.get("batch", data.get("batching", None))
    if section is None:
        section = {k: v for k, v in data.items() if k != "sequence"}
    if not isinstance(section, Mapping):
        raise UserError(f"{p}: 'batch' must be a mapping")
    from ..policy import SEED_ALIASES

    known = set(BatchPolicy.__dataclass_fields__) | set(SEED_ALIASES)
    check_keys(section, known, f"{p}: batch" if section is not data else str(p))
    return dict(section)


def read_sequence_config(path: str | os.PathLike[str] | None) -> Any:
    """The ``sequence:`` section of a config.yaml (None when absent; False turns the detection off)."""
    if path is None:
        return None
    p = Path(path)
    data = read_mapping(p, what="a mapping of batch-policy keys")
    sec = data.get("sequence")
    if sec is not None and sec is not False and not isinstance(sec, Mapping):
        raise UserError(f"{p}: 'sequence' must be a mapping (state, idle_timeout_s, max_sequences) or false")
    return sec


def resolve_policy(bundle: Bundle, profile: Profile, batching: Any, config: str | os.PathLike[str] | None
                   ) -> BatchPolicy:
    """Bundle's policy (from the profile it was built for) <- config.yaml <- ``batching=``."""
    base = profile.batch
    if bundle.manifest.batch:
        base = BatchPolicy.from_dict(bundle.manifest.batch, base=base, source="bundle batch")
    if config is not None:
        base = BatchPolicy.from_dict(read_config(config), base=base, source=str(config))
    if batching is None:
        return base
    if isinstance(batching, BatchPolicy):
        return batching
    if isinstance(batching, (str, os.PathLike)):
        return BatchPolicy.from_dict(read_config(batching), base=base, source=str(batching))
    if isinstance(batching, Mapping):
        return BatchPolicy.from_dict(batching, base=base, source="batching")
    raise UserError(f"batching= expects a BatchPolicy, a dict or a config.yaml path, got {type(batching).__name__}")


def bundle_from_onnx(path: Path) -> Bundle:
    """Wrap a raw ONNX file as an (unsaved) bundle: IO spec read from an ONNX Runtime session."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable("onnxruntime", "needed to read a raw .onnx file", extra="cpu") from exc
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise BundleError(f"{path}: not a loadable ONNX model ({str(exc).strip().splitlines()[0]})") from None

    def spec(node) -> TensorSpec:
        dims = [d if isinstance(d, int) and d > 0 else -1 for d in node.shape]
        names = tuple(d if isinstance(d, str) else None for d in node.shape)
        if node.type not in _ORT_TYPES:
            raise BundleError(f"{path}: input/output {node.name!r} has unsupported type {node.type}")
        return TensorSpec(node.name, _ORT_TYPES[node.type], tuple(dims), names)

    # each tensor's batch axis inferred as `build` does (runtime/axes.py): a recurrent state [2, batch, 128] on
    # axis 1, a scalar sample rate shared by the batch (silero-vad loads batched, not one request at a time)
    inputs, outputs, batched = with_batch_axes([spec(i) for i in sess.get_inputs()],
                                               [spec(o) for o in sess.get_outputs()])
    digest = sha256_file(path)
    art = Artifact(path=path.name, sha256=digest, bytes=path.stat().st_size, role="model")
    manifest = Manifest(name=path.stem, inputs=inputs, outputs=outputs, precision="as-is",
                        max_batch_size=1 if batched else 0, profile={}, batch={}, artifacts={art.path: art},
                        source={"path": str(path), "format": "onnx", "sha256": digest})
    return Bundle(root=path.parent, manifest=manifest)


def _cache_dir() -> Path:
    base = os.environ.get("XINFER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "xinfer-sdk")
    return Path(base)


#: what xs.load says instead of the build's CLI hint (--shapes / --dtype / --calib are not xs.load arguments)
LOAD_SHAPES_HINT = ("pass example shapes to xs.load, one per input named above, e.g. shapes={'NAME': "
                    "'1x8..32x128..64x512'} (or shapes='NAME:1x8..32x128..64x512'; add dtypes={'NAME': 'int64'} for "
                    "integer inputs), or build a bundle first with xs.build(...) / xinfer-sdk build")
_MODEL_FILES = (".pt", ".pth", ".ts", ".pt2")


def bundle_from_model(path: Path, profile: Profile, **build_kw: Any) -> Bundle:
    """Build a bundle on the fly from a TorchScript / ExportedProgram file (cached by content, profile and the
    build arguments)."""
    key = f"{sha256_file(path)}:{profile.name}"
    if any(v is not None for v in build_kw.values()):
        key += ":" + repr(sorted((k, repr(v)) for k, v in build_kw.items()))
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    out = _cache_dir() / "bundles" / f"{path.stem}-{digest}.xinfer"
    if is_bundle(out):
        return open_bundle(out)
    from ..builder import build

    try:
        return build(str(path), profile=profile, output=str(out), **build_kw)
    except UserError as exc:
        from xinfer_sdk.converters.export import SHAPES_HINT

        if SHAPES_HINT not in exc.message:
            raise
        cls = type(exc) if type(exc) in (UserError, ConversionError) else UserError
        raise cls(exc.message.replace(SHAPES_HINT, LOAD_SHAPES_HINT), hint=exc.hint) from None


def _open(path: Any, profile: Profile, *, shapes: Any = None, dtypes: Mapping[str, str] | None = None) -> Bundle:
    if isinstance(path, Bundle):
        return _no_build_args(path.name, shapes, dtypes) or path
    p = Path(path)
    if p.is_file() and p.suffix.lower() in _MODEL_FILES:
        return bundle_from_model(p, profile, shapes=shapes, dtypes=dtypes)
    _no_build_args(str(p), shapes, dtypes)
    if is_bundle(p):
        return open_bundle(p)
    if p.is_file() and p.suffix.lower() == ".onnx":
        return bundle_from_onnx(p)
    return open_bundle(p)  # raises the right BundleError (missing / not a bundle)


def _no_build_args(what: str, shapes: Any, dtypes: Any) -> None:
    """shapes= / dtypes= only size the export of a model file; never ignored silently elsewhere."""
    given = [k for k, v in (("shapes", shapes), ("dtypes", dtypes)) if v is not None]
    if given:
        raise UserError(f"{' and '.join(f'{k}=' for k in given)} only apply when xs.load builds a TorchScript / "
                        f"ExportedProgram file ({', '.join(_MODEL_FILES)}); {what} is not one")


def default_threads(device: str, concurrency: int) -> int | None:
    if device != "cpu":  # a GPU session: ONNX Runtime's own default for the few CPU nodes
        return None
    cpus = read_host().usable_cpus
    return max(1, math.floor(cpus / concurrency))


def load(path: Any, *, profile: str | Profile | None = "auto", backend: str = "auto",
         batching: BatchPolicy | Mapping[str, Any] | str | None = None, device: str | None = None,
         threads: int | None = None, config: str | os.PathLike[str] | None = None, name: str | None = None,
         profiles_dirs: Sequence[str] = (), overrides: Sequence[str] = (), warmup: bool = True,
         options: Mapping[str, Any] | None = None, allow_failed_gate: bool = False, shapes: Any = None,
         dtypes: Mapping[str, str] | None = None, sequence: Mapping[str, Any] | bool | None = None) -> Model:
    """Load a bundle (or a raw .onnx / TorchScript file) and start its batching core.

    profile: "auto" (detect this machine), a profile name, a YAML path or a Profile.
    backend: "auto" (the profile's order, intersected with what works here), "onnxruntime", "tensorrt", "torch",
        "migraphx" (AMD).
        Under "auto" a backend that fails to start (e.g. a TensorRT build the ONNX parser refuses) is skipped
        for the next one, with a warning (also in ``describe()['notes']``); a named backend fails instead.
    batching: a BatchPolicy, a dict of policy keys, or a config.yaml path; defaults to the bundle's policy.
    device: "cpu", "cuda", "cuda:1" ("gpu:N" means "cuda:N"), "rocm:N" (AMD, also "hip:N"); defaults to the
        profile's kind (rocm:0 for an AMD profile). A GPU profile on a machine where no GPU
        backend works falls back to the CPU with a warning (recorded in ``describe()['notes']``).
        Several devices: "cuda:0,1,2,3", "cuda:0,cuda:2", a list, or "all" (every visible GPU): the batch
        policy's ``device_concurrency`` workers on EACH device behind one queue; "cpu:0,cpu:1" makes CPU
        worker groups (``describe()['devices']``, ``device_stats()``).
    sequence: a stateful model's state declaration, as config.yaml's ``sequence:`` ({"state": {"state":
        "stateN"}, "idle_timeout_s": 60, "max_sequences": 1024}); False: stateless even if the IO names look like
        state. Default: config.yaml's, else the bundle manifest's ``extra['sequence']``, else detected from the
        names (state/stateN, h/hn, c/cn, x_in/x_out). See docs/sequences.md.
    allow_failed_gate: load a bundle whose accuracy gate failed at build time (refused otherwise).
    shapes, dtypes: for a TorchScript / ExportedProgram file only (xs.load builds a bundle from it, as
        ``xs.build``): example input shapes, as ``xs.build(shapes=...)`` takes them ('x:1x8..32x8..64x8' or
        {'x': '1x8'}), and {'ids': 'int64'} for integer inputs.
    """
    devices: list[str] | None = None
    if device is not None:  # a typo is refused before anything is opened or built
        devices = parse_devices(device)
        device = engine_device(devices[0])
        if len(devices) == 1 and not devices[0].startswith("cpu:"):
            devices = None
    check_options(options, ALIASES.get(backend, backend or "auto"))
    prof = resolve_profile(profile, profiles_dirs=profiles_dirs, overrides=overrides)
    bundle = _open(path, prof, shapes=shapes, dtypes=dtypes)
    accuracy = bundle.manifest.accuracy or {}
    if accuracy.get("passed") is False and not allow_failed_gate:
        raise BundleError(f"bundle '{bundle.name}' failed its accuracy gate when it was built "
                          f"({bundle.manifest.precision} vs the FP32 reference)",
                          hint="see `xinfer-sdk inspect`; rebuild it, or load it anyway from Python with "
                               "xs.load(path, allow_failed_gate=True) (`serve` refuses it)")
    policy = resolve_policy(bundle, prof, batching, config)
    seq_spec: SequenceSpec | None = resolve_sequence(
        bundle.manifest.inputs, bundle.manifest.outputs,
        config=sequence if sequence is not None else read_sequence_config(config),
        manifest_extra=bundle.manifest.extra)
    _size_raw_onnx(bundle, policy)
    notes: list[str] = []
    explicit_device = device is not None
    gpu = "rocm:0" if prof.vendor == "amd" else "cuda:0"
    dev = normalize_device(device or (gpu if prof.kind in ("gpu", "jetson") else "cpu"))
    try:
        cls, why, skipped = choose(bundle, prof, dev, backend)
    except BackendUnavailable:
        if explicit_device or dev == "cpu":
            raise
        note = f"profile '{prof.name}' targets a GPU but no GPU backend works here; running on the CPU"
        log.warning("%s", note)
        notes.append(note)
        dev = "cpu"
        cls, why, skipped = choose(bundle, prof, dev, backend)
    built_for = (bundle.manifest.profile or {}).get("resolved", {})
    if dev == "cpu" and bundle.manifest.precision == "int8" and \
            (built_for.get("quantization") or {}).get("scheme") == "symmetric":
        notes.append("this INT8 graph uses the symmetric scheme TensorRT needs, which ONNX Runtime's CPU provider "
                     "runs slower than FP32; build for the 'cpu' profile for a fast CPU INT8 graph")
        log.warning("%s: %s", bundle.name, notes[-1])
    plan_max = engine_batch_cap(bundle.manifest, dev)
    if plan_max and policy.max_batch_size > plan_max:
        # a TensorRT engine (or ORT's TensorRT EP) is built for batch <= the plan's max: bigger batches would fail
        notes.append(f"max_batch_size {policy.max_batch_size} lowered to {plan_max}, the largest batch the bundle's "
                     "TensorRT engine plan covers (rebuild with --max-batch-size for more); larger requests are split")
        log.warning("%s: %s", bundle.name, notes[-1])
        policy = dataclasses.replace(policy, max_batch_size=plan_max,
                                     preferred_batch_sizes=tuple(b for b in policy.preferred_batch_sizes
                                                                 if b <= plan_max))
    if threads is None:
        threads = default_threads(dev, policy.device_concurrency * len(devices or [dev]))
    while True:
        log.info("%-28s | backend %s (%s)", f"load[{bundle.name}]", cls.name, why)
        try:
            return Model(bundle, profile=prof, backend_cls=cls, backend_reason=why, skipped=skipped, device=dev,
                         threads=threads, policy=policy, options=options, name=name, warmup=warmup, notes=notes,
                         devices=devices if dev != "cpu" or devices is None or devices[0].startswith("cpu") else None,
                         sequence=seq_spec)
        except XinferError as exc:
            if (backend or "auto") != "auto":
                raise
            # auto: a backend that was usable on paper failed to start (a TensorRT build the parser refused,
            # a provider that did not come up): go on with the next one, saying why
            note = f"backend {cls.name} failed to start ({exc}); trying the next one"
            log.warning("%s: %s", bundle.name, note)
            notes.append(note)
            excluded = {**skipped, cls.name: f"failed to start: {exc}"}
            cls, why, skipped = choose(bundle, prof, dev, backend, exclude=excluded)


def engine_batch_cap(manifest: Manifest, device: str) -> int:
    """The largest batch the bundle's TensorRT engine plan covers when it runs on ``device`` (0: no cap).

    A TensorRT engine (or ORT's TensorRT EP) is built for batch <= the plan's max, so on a GPU ``load`` lowers a
    larger ``max_batch_size`` to it, and ``plan`` recommends nothing above it."""
    if normalize_device(device) == "cpu":
        return 0
    return int(((manifest.engine_plan or {}).get("batch") or {}).get("max") or 0)


def _size_raw_onnx(bundle: Bundle, policy: BatchPolicy) -> None:
    """A raw .onnx has no recorded batch maximum: take the requested policy's, so a TensorRT plan made for it
    covers the batches the batching core will send (not 1..1)."""
    mf = bundle.manifest
    if mf.precision == "as-is" and not mf.engine_plan and mf.max_batch_size > 0:
        mf.max_batch_size = policy.max_batch_size
        mf.batch = {"preferred_batch_sizes": list(policy.preferred_batch_sizes)}
