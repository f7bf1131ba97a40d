"""TensorRT engine plans as plain data: what to build, how the result is named, and whether it fits a GPU.

Nothing here imports TensorRT or CUDA: the plan is made on any machine (``xinfer-sdk build`` on a CPU-only
CI runner), recorded in the bundle manifest (``engine_plan``), and compiled on the target by
``xinfer_sdk.converters.tensorrt_engine.build_engine`` — at build time when a GPU is present, else on first
load by the TensorRT backend. The ONNX Runtime TensorRT execution provider gets its options from the same plan.

    plan = make_build_plan(profile=prof, precision="fp16", inputs=specs, max_batch_size=32, shapes=ranges)
    key = engine_key(plan, "8.6", "10.3.0")        # -> sm86_trt10.3.0_fp16_<hash8>.plan
    ort_trt_provider_options(plan, cache_dir)       # -> {"trt_fp16_enable": "True", ...}

Engines are specific to the GPU's compute capability and to the exact TensorRT version, so both are in the
file name, with the precision and a hash of everything else that shapes the engine (optimization profiles,
workspace, builder level, hardware compatibility, DLA).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...bundle import TensorSpec
from ...errors import InvalidInput, UserError
from ...shapes import ShapeRange, check_names

PLAN_FORMAT = 1
GIB = 1 << 30
BUILD_MAJORS = (10, 11)  # TensorRT majors this builder drives
DLA_PRECISIONS = ("fp16", "int8")  # DLA runs FP16 and INT8 only
# Builder flags that turn on reduced precision in TensorRT 10 (weakly typed networks). TensorRT 11 removed
# them all: networks are strongly typed and the precision comes from the graph's own types and Q/DQ nodes.
# FP8 sets none: its Q/DQ graph is built strongly typed on 10 as on 11 (see flags_for_major).
_FLAGS_10 = {"fp32": [], "tf32": ["TF32"], "fp16": ["FP16"], "bf16": ["BF16"], "int8": ["INT8"], "fp8": []}
_EXAMPLE_DYN = (1, 128, 512)  # placeholder min/opt/max for a non-batch axis in error messages


# ----------------------------------------------------------------------------------------------------------
# Optimization profiles
def opt_batch_size(max_batch_size: int, preferred: Iterable[int] = ()) -> int:
    """The batch size TensorRT tunes for: the largest preferred size that fits, else the maximum."""
    fitting = [int(p) for p in preferred if 0 < int(p) <= max_batch_size]
    return max(fitting) if fitting else max_batch_size


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _as_spec(spec: TensorSpec | Mapping[str, Any]) -> TensorSpec:
    return spec if isinstance(spec, TensorSpec) else TensorSpec.from_dict(spec)


def _example(spec: TensorSpec, batched: bool, opt_batch: int, max_batch: int) -> str:
    parts = []
    for batch, dyn in zip((1, opt_batch, max_batch), _EXAMPLE_DYN):
        dims = [batch if (batched and axis == 0 and d < 0) else (d if d >= 0 else dyn)
                for axis, d in enumerate(spec.shape)]
        parts.append(_shape_text(dims))
    return f"{spec.name}:{'..'.join(parts)}"


def profile_ranges(inputs: Sequence[TensorSpec | Mapping[str, Any]], *, max_batch_size: int, opt_batch: int,
                   shapes: Mapping[str, ShapeRange] | None = None) -> dict[str, dict[str, list[int]]]:
    """min / opt / max shape per dynamic input: the batch axis from the batch policy (1 / opt / max), every
    other dynamic axis from ``shapes`` (``--shapes``). Static inputs need no entry."""
    specs = [_as_spec(s) for s in inputs]
    shapes = dict(shapes or {})
    check_names(shapes, [s.name for s in specs])
    batched = max_batch_size > 0
    out: dict[str, dict[str, list[int]]] = {}
    for spec in specs:
        if all(d >= 0 for d in spec.shape):
            continue
        rng = shapes.get(spec.name)
        if rng is not None and len(rng.min) != len(spec.shape):
            raise UserError(f"--shapes {spec.name}: gives rank {len(rng.min)} but the input has rank {len(spec.shape)} "
                            f"(shape {list(spec.shape)}, -1 = dynamic)")
        triples: list[tuple[int, int, int]] = []
        for axis, d in enumerate(spec.shape):
            if batched and axis == 0 and d < 0:
                triples.append((1, opt_batch, max_batch_size))
            elif d >= 0:
                if rng is not None and not (rng.min[axis] == rng.opt[axis] == rng.max[axis] == d):
                    raise UserError(f"--shapes {spec.name}: axis {axis} is fixed at {d} in the model, got "
                                    f"{rng.min[axis]}..{rng.opt[axis]}..{rng.max[axis]}")
                triples.append((d, d, d))
            elif rng is None:
                what = spec.dim_names[axis] if axis < len(spec.dim_names) and spec.dim_names[axis] else "unnamed"
                raise UserError(f"input {spec.name!r} has a dynamic axis {axis} ({what}) besides the batch axis and no "
                                f"shape range for it", hint=f"give MIN..OPT..MAX with --shapes "
                                f"{_example(spec, batched, opt_batch, max_batch_size)}")
            else:
                triples.append((rng.min[axis], rng.opt[axis], rng.max[axis]))
        lo, mid, hi = (list(t) for t in zip(*triples))
        out[spec.name] = {"min": lo, "opt": mid, "max": hi}
    return out


# ----------------------------------------------------------------------------------------------------------
# Flags per TensorRT major, DLA, hardware compatibility
def flags_for_major(precision: str, major: int, *, fp16_fallback: bool = True,
                    graph: str | None = None) -> dict[str, Any]:
    """How to build for one TensorRT major: network typing and the builder flags to set / clear.

    ``graph`` is the element type of the deployable ONNX graph ("fp32", "fp16", "bf16", "int8" / "fp8" for Q/DQ;
    None = not recorded, assumed converted for ``precision``). TensorRT 11 is strongly typed: an FP16 or BF16
    engine needs the graph in that type, so an FP32 graph with precision fp16/bf16 is refused for 11, never
    silently built as FP32.
    """
    clear = ["TF32"] if precision == "fp32" else []  # FP32 means FP32: the accuracy gate measured it so
    if precision == "fp8" and graph is not None and graph != "fp8":
        return {"supported": False, "network": "strongly_typed", "set_flags": [], "clear_flags": [],
                "note": f"an FP8 engine needs the graph's FP8 Q/DQ nodes, but this model.onnx is {graph.upper()}; "
                        "rebuild the bundle with --precision fp8 (converters/fp8.py)"}
    if precision == "fp8" and major in (10, 11):
        # TensorRT 10's BuilderFlag.FP8 only enables plugins with FP8 input/output (deprecated in 10.12, refused
        # with hardware compatibility ampere+); FP8 Q/DQ graphs want a strongly typed network (weakly typed
        # TensorRT 10.2 chose no FP8 tactics: NVIDIA/TensorRT#3987), which also runs the FP32 remainder in FP32,
        # as the accuracy gate measured it. TensorRT 11 removed the flag: strongly typed only.
        return {"supported": True, "network": "strongly_typed", "set_flags": [], "clear_flags": [],
                "note": "FP8 from the graph's explicit E4M3 Q/DQ nodes, strongly typed network (no precision flags)"}
    if major >= 11:
        if precision in ("fp16", "bf16", "int8") and graph is not None and graph != precision:
            what = "Q/DQ nodes" if precision == "int8" else f"tensors in {precision.upper()}"
            return {"supported": False, "network": "strongly_typed", "set_flags": [], "clear_flags": [],
                    "note": f"TensorRT {major} is strongly typed: a {precision.upper()} engine needs the graph's "
                            f"{what}, but this model.onnx is {graph.upper()} (the precision builder flags were "
                            f"removed in TensorRT 11); rebuild the bundle with this xinfer-sdk (its {precision} "
                            f"step converts the graph), or use TensorRT 10"}
        return {"supported": True, "network": "strongly_typed", "set_flags": [], "clear_flags": clear,
                "note": "TensorRT 11 networks are strongly typed: FP16/BF16 come from the graph's types, INT8 from "
                        "its explicit Q/DQ nodes (the precision builder flags were removed)"}
    if major == 10:
        flags = list(_FLAGS_10[precision])
        if precision == "int8" and fp16_fallback:
            flags.append("FP16")  # layers left unquantized may run in FP16 instead of FP32
        return {"supported": True, "network": "weakly_typed", "set_flags": flags, "clear_flags": clear,
                "note": "INT8 from the graph's explicit Q/DQ nodes (no calibrator)" if precision == "int8" else ""}
    return {"supported": False, "network": None, "set_flags": [], "clear_flags": [],
            "note": f"xinfer-sdk builds engines with TensorRT 10 or 11, not {major}.x; on that stack compile "
                    "model.onnx with its own trtexec"}


def dla_config(profile: Any, precision: str) -> dict[str, Any]:
    """DLA with GPU fallback, only on Jetson profiles that have DLA cores and ask for it (shapes not yet known:
    ``make_build_plan`` turns DLA off again for a dynamic profile, see ``_dla_for_ranges``)."""
    trt = profile.tensorrt
    if not trt.use_dla:
        return {"enabled": False, "reason": f"profile '{profile.name}' does not use DLA"}
    if profile.kind != "jetson" or int(profile.dla_cores or 0) <= 0:
        return {"enabled": False, "reason": f"{profile.display_name} has no DLA cores"}
    if precision not in DLA_PRECISIONS:
        return {"enabled": False, "reason": f"DLA runs FP16 and INT8 only, not {precision.upper()}"}
    return {"enabled": True, "core": 0, "gpu_fallback": bool(trt.dla_gpu_fallback),
            "note": "the builder checks builder.num_DLA_cores and builds for the GPU alone when this TensorRT sees "
                    "no DLA (JetPack 6's TensorRT 10.3 has DLA on Orin; TensorRT 11 on JetPack 7 for AGX Orin)"}


def _dla_for_ranges(dla: dict[str, Any], ranges: Mapping[str, Mapping[str, Sequence[int]]]) -> dict[str, Any]:
    """DLA needs min = opt = max for every input ("DLA does not support dynamic dimensions", TensorRT's DLA
    restrictions); with GPU fallback a dynamic profile silently runs every layer on the GPU. So a dynamic
    plan gets DLA off, with the reason recorded, and only a static plan (max batch 1, or fixed shapes) uses it."""
    if not dla.get("enabled"):
        return dla
    dynamic = [f"{n} {_shape_text(r['min'])}..{_shape_text(r['opt'])}..{_shape_text(r['max'])}"
               for n, r in ranges.items() if not (list(r["min"]) == list(r["opt"]) == list(r["max"]))]
    if not dynamic:
        return {**dla, "static": True}
    return {"enabled": False, "requested": True,
            "reason": f"DLA needs min = opt = max shapes and this plan is dynamic ({'; '.join(dynamic)}); the "
                      "engine is built for the GPU. For DLA, build with --max-batch-size 1 and fixed --shapes"}


def cc_tuple(compute_capability: str | None) -> tuple[int, int] | None:
    if not compute_capability:
        return None
    m = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(compute_capability))
    if not m:
        raise UserError(f"compute capability {compute_capability!r} is not like '8.6'")
    return int(m.group(1)), int(m.group(2))


def hardware_compatibility(profile: Any) -> str:
    """'none' or 'ampere+'; ampere+ is refused where TensorRT does not offer it (before Ampere, on JetPack)."""
    level = profile.tensorrt.hardware_compatibility
    if level != "ampere+":
        return "none"
    cc = cc_tuple(profile.compute_capability)
    if cc is None or cc < (8, 0):
        sm = f" ({profile.sm})" if profile.sm else ""
        raise UserError(f"profile '{profile.name}': hardware_compatibility ampere+ needs compute capability 8.0 or "
                        f"newer; {profile.display_name}{sm} is {profile.compute_capability or 'unknown'}",
                        hint="set tensorrt.hardware_compatibility: none")
    if profile.kind == "jetson":
        raise UserError(f"profile '{profile.name}': TensorRT hardware compatibility is not supported on JetPack",
                        hint="set tensorrt.hardware_compatibility: none")
    return "ampere+"


# ----------------------------------------------------------------------------------------------------------
# The plan
def plan_hash(plan: Mapping[str, Any]) -> str:
    """Hash of everything besides GPU and TensorRT version that changes the engine (16 hex digits): the
    precision, shapes, workspace, builder level, hardware compatibility, DLA, the INT8+FP16 fallback, the
    graph's type and the recorded settings per TensorRT major (flags, typing)."""
    dla = plan.get("dla") or {}
    basis = {
        "precision": plan["precision"], "profiles": plan["profiles"], "workspace_bytes": plan.get("workspace_bytes"),
        "builder_optimization_level": plan.get("builder_optimization_level"),
        "hardware_compatibility": plan.get("hardware_compatibility", "none"),
        "dla": [dla.get("core"), dla.get("gpu_fallback")] if dla.get("enabled") else None,
        "fp16_fallback": bool(plan.get("fp16_fallback", True)),
        "per_major": {k: {f: v.get(f) for f in ("supported", "network", "set_flags", "clear_flags")}
                      for k, v in sorted((plan.get("per_major") or {}).items())},
    }
    if plan.get("graph") is not None:
        basis["graph"] = plan["graph"]
    text = json.dumps(basis, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_build_plan(*, profile: Any, precision: str, inputs: Sequence[TensorSpec | Mapping[str, Any]],
                    max_batch_size: int, shapes: Mapping[str, ShapeRange] | None = None,
                    preferred_batch_sizes: Iterable[int] | None = None, graph: str | None = None) -> dict[str, Any]:
    """The JSON-able TensorRT build plan recorded in the bundle manifest (``engine_plan``).

    ``graph``: the element type of the deployable graph ("fp32", "fp16", "bf16", "int8", "fp8"); recorded, and used
    to refuse an FP16/BF16 engine from an FP32 graph on strongly typed TensorRT 11.

    Raises UserError for what the user must fix: an unsupported precision, a dynamic non-batch axis without
    a ``--shapes`` range, ``hardware_compatibility: ampere+`` on a GPU older than Ampere.
    """
    precision = profile.check_precision(precision)
    if precision not in _FLAGS_10:
        raise UserError(f"xinfer-sdk cannot build a {precision.upper()} TensorRT engine yet; "
                        f"use one of {', '.join(p for p in profile.precisions if p in _FLAGS_10)}")
    if max_batch_size < 0:
        raise UserError(f"max_batch_size must be >= 0 (0 = the model has no batch axis), got {max_batch_size}")
    prefs = profile.batch.preferred_batch_sizes if preferred_batch_sizes is None else tuple(preferred_batch_sizes)
    opt = opt_batch_size(max_batch_size, prefs) if max_batch_size > 0 else 0
    ranges = profile_ranges(inputs, max_batch_size=max_batch_size, opt_batch=opt, shapes=shapes)
    hw = hardware_compatibility(profile)
    dla = _dla_for_ranges(dla_config(profile, precision), ranges)
    fp16_fallback = "fp16" in profile.precisions
    workspace = int(round(profile.memory.workspace_gb * GIB)) if profile.memory.workspace_gb > 0 else None
    plan: dict[str, Any] = {
        "format": PLAN_FORMAT,
        "precision": precision,
        "target": {"profile": profile.name, "compute_capability": profile.compute_capability,
                   "tensorrt_versions": list(profile.tensorrt.versions)},
        "batch": {"min": 1, "opt": opt, "max": max_batch_size} if max_batch_size > 0 else None,
        "profiles": [ranges],
        "workspace_bytes": workspace,
        "builder_optimization_level": int(profile.tensorrt.builder_optimization_level),
        "hardware_compatibility": hw,
        "dla": dla,
        "fp16_fallback": fp16_fallback,
        "per_major": {str(m): flags_for_major(precision, int(m), fp16_fallback=fp16_fallback, graph=graph)
                      for m in profile.tensorrt.versions},
    }
    if graph is not None:
        plan["graph"] = graph
    plan["hash"] = plan_hash(plan)
    return plan


def settings_for(plan: Mapping[str, Any], major: int) -> dict[str, Any]:
    """The plan's settings for the installed TensorRT major (derived from the precision if not recorded)."""
    rec = (plan.get("per_major") or {}).get(str(major))
    if rec is not None:
        return dict(rec)
    return flags_for_major(plan["precision"], major, fp16_fallback=bool(plan.get("fp16_fallback", True)),
                           graph=plan.get("graph"))


# ----------------------------------------------------------------------------------------------------------
# Engine naming: (compute capability, TensorRT version, precision, plan hash)
def normalize_trt_version(version: str) -> str:
    """'10.7.0.post1' -> '10.7.0'; the numeric part TensorRT's plan compatibility depends on."""
    m = re.match(r"\d+(?:\.\d+)*", str(version).strip())
    if not m:
        raise ValueError(f"not a TensorRT version: {version!r}")
    return m.group(0)


def trt_major(version: str) -> int:
    return int(normalize_trt_version(version).split(".")[0])


def sm_target(compute_capability: str, hw_compat: str = "none") -> str:
    cc = cc_tuple(compute_capability)
    if cc is None:
        raise UserError("a TensorRT engine needs the GPU's compute capability")
    return "sm80+" if hw_compat == "ampere+" else f"sm{cc[0]}{cc[1]}"


_KEY_RE = re.compile(r"^(?P<target>sm\d+\+?)_trt(?P<ver>\d+(?:\.\d+)*)_(?P<prec>[a-z0-9]+)_(?P<hash>[0-9a-f]{8})$")


@dataclasses.dataclass(frozen=True)
class EngineKey:
    target: str  # 'sm86', or 'sm80+' for a hardware-compatible (Ampere and newer) engine
    trt_version: str  # exact numeric TensorRT version: plans do not load across versions
    precision: str
    plan_hash: str  # first 8 hex digits of plan_hash()

    @property
    def stem(self) -> str:
        return f"{self.target}_trt{self.trt_version}_{self.precision}_{self.plan_hash[:8]}"

    @property
    def filename(self) -> str:
        return self.stem + ".plan"

    def __str__(self) -> str:
        return self.stem

    @classmethod
    def parse(cls, name: str) -> EngineKey | None:
        """Key of an engine file name (or stem); None for names that are not ours."""
        stem = name[:-5] if name.endswith(".plan") else name
        m = _KEY_RE.match(stem)
        if not m:
            return None
        return cls(m["target"], m["ver"], m["prec"], m["hash"])

    def runs_on(self, compute_capability: str, trt_version: str) -> bool:
        """True when this engine can be deserialized on that GPU with that TensorRT."""
        if self.trt_version != normalize_trt_version(trt_version):
            return False
        cc = cc_tuple(compute_capability)
        if cc is None:
            return False
        if self.target.endswith("+"):
            return cc >= (8, 0)
        return self.target == f"sm{cc[0]}{cc[1]}"


def engine_key(plan: Mapping[str, Any], compute_capability: str, trt_version: str) -> EngineKey:
    return EngineKey(sm_target(compute_capability, plan.get("hardware_compatibility", "none")),
                     normalize_trt_version(trt_version), plan["precision"], plan_hash(plan)[:8])


def timing_cache_name(compute_capability: str, trt_version: str) -> str:
    """Timing caches are per GPU architecture and TensorRT version, shared by every plan of the bundle."""
    return f"timing_{sm_target(compute_capability)}_trt{normalize_trt_version(trt_version)}.cache"


def matching_engines(names: Iterable[str], plan: Mapping[str, Any], compute_capability: str,
                     trt_version: str) -> list[str]:
    """The names (paths) among ``names`` whose key fits this plan, GPU and TensorRT; exact-GPU ones first."""
    want_hash = plan_hash(plan)[:8]
    exact, compat = [], []
    for name in names:
        key = EngineKey.parse(str(name).replace("\\", "/").rsplit("/", 1)[-1])
        if key is None or key.plan_hash != want_hash or key.precision != plan["precision"]:
            continue
        if key.runs_on(compute_capability, trt_version):
            (compat if key.target.endswith("+") else exact).append(name)
    return exact + compat


def trt_supports_gpu(compute_capability: str, trt_version: str) -> str | None:
    """None when this TensorRT can target this GPU, else why not (from NVIDIA's support matrices)."""
    cc = cc_tuple(compute_capability)
    ver = tuple(int(x) for x in normalize_trt_version(trt_version).split(".")[:2])
    if cc is None:
        return "unknown compute capability"
    if ver[0] < 10:
        return f"TensorRT {trt_version} is installed; xinfer-sdk builds and runs engines with TensorRT 10 or 11"
    if cc < (7, 0):
        return f"TensorRT 10 and newer need compute capability 7.0 or newer, this GPU is {compute_capability}"
    if cc == (7, 0) and ver >= (10, 5):
        return f"TensorRT {trt_version} dropped Volta (sm_70; removed in 10.5); use TensorRT 10.4 or older"
    return None


# ----------------------------------------------------------------------------------------------------------
# Runtime helpers
def user_engine_dir(model_sha256: str, env: Mapping[str, str] | None = None) -> str:
    """Where engines go when the bundle is read-only: $XINFER_CACHE_DIR, else $XDG_CACHE_HOME/xinfer-sdk,
    else ~/.cache/xinfer-sdk; then engines/<first 16 hex digits of the model's sha256>."""
    env = os.environ if env is None else env
    base = env.get("XINFER_CACHE_DIR") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "xinfer-sdk")
    return os.path.join(base, "engines", (model_sha256 or "unknown")[:16])


def parse_device(device: str) -> int:
    """'cuda' / 'cuda:1' / 'gpu:0' -> CUDA device index; anything else is a UserError."""
    m = re.fullmatch(r"\s*(?:cuda|gpu)(?::(\d+))?\s*", str(device).lower())
    if not m:
        raise UserError(f"device {device!r} is not a CUDA device; TensorRT needs 'cuda' or 'cuda:N'")
    return int(m.group(1) or 0)


def check_feed_shapes(shapes: Mapping[str, Sequence[int]], ranges: Mapping[str, Mapping[str, Sequence[int]]]) -> None:
    """Refuse a batch the engine's optimization profile does not cover, saying the allowed range."""
    for name, shape in shapes.items():
        rng = ranges.get(name)
        if rng is None:
            continue
        lo, hi = rng["min"], rng["max"]
        if len(shape) != len(lo) or any(not (a <= s <= b) for s, a, b in zip(shape, lo, hi)):
            raise InvalidInput(f"input {name!r} has shape {list(shape)}; the TensorRT engine was built for "
                               f"{_shape_text(lo)} .. {_shape_text(hi)}",
                               hint="rebuild with a larger max batch size or --shapes range")


def grow_bytes(needed: int, current: int, *, minimum: int = 256) -> int:
    """New buffer size for ``needed`` bytes: unchanged if it fits, else at least doubled (few reallocations)."""
    if needed <= current:
        return current
    return max(needed, 2 * current, minimum)


# ----------------------------------------------------------------------------------------------------------
# ONNX Runtime's TensorRT execution provider, driven by the same plan: ort_trt_options.py (re-exported here)
from .ort_trt_options import ORT_TRT_BF16_SINCE, ort_precision_gap, ort_trt_provider_options  # noqa: E402, F401
