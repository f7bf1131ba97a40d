"""The hardware-profile schema: what a profile YAML may contain, checked field by field.

A profile is validated once, at load time, into a frozen ``Profile``. Every error names the file, the
field path (``batch.max_batch_size``) and what was expected, in one line.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from ..errors import ProfileError, UserError
from ..policy import BatchPolicy
from ._checker import UNKNOWN, Date, ListOf, Scalar, Section, checkpoint
from ._rules import arch_family_of, check_complete

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")
# Precisions xinfer-sdk can produce as a deployable graph (TF32 is a TensorRT math mode, not a graph type).
BUILDABLE_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")  # bf16: converters/bf16.py, fp8: converters/fp8.py
KINDS = ("gpu", "jetson", "cpu")
VENDORS = ("nvidia", "amd")
# Architecture families the planner keys its efficiency tables on (``Profile.arch_family``).
ARCH_FAMILIES = ("volta", "volta-xavier", "turing", "ampere-dc", "ampere", "ada", "hopper", "blackwell",
                 "blackwell-thor", "cdna2", "cdna3", "cdna4", "cpu", "unknown")
BACKENDS = ("tensorrt", "onnxruntime", "torch", "migraphx")


_str = Scalar(str)
_num = Scalar(float, nullable=True, minimum=0)
# A vendor figure: a number, null (not applicable / none) or 'unknown' (exists but unpublished; exposed as None).
_fig = Scalar(float, nullable=True, minimum=0, unknown_ok=True)
_prec = Scalar(str, choices=PRECISIONS)

PEAKS = Section({p: Scalar(float, required=True, nullable=True, minimum=0, what="a number (TFLOPS / TOPS) or null",
                           unknown_ok=True)
                 for p in PRECISIONS})
OFFER = Section({
    "provider": Scalar(str, required=True, what="a cloud provider like aws"),
    "name": Scalar(str, required=True, what="an instance type like g6.xlarge"),
    "gpus": Scalar(int, required=True, minimum=1),
    "usd_per_hour": Scalar(float, required=True, minimum=0, what="the instance's on-demand USD per hour"),
    "region": _str,
    "date": Date(),
    "secondary": Scalar(bool, what="true when the price comes only from a third-party copy"),
    "note": _str,
})
PRICING = Section({
    "usd_per_gpu_hour": Scalar(float, required=True, minimum=0, what="USD per GPU-hour (a number)"),
    "instance": Section(OFFER.fields, required=True),
    "offers": ListOf(OFFER),
}, nullable=True)
DERIVED = Section({}, open_keys=Section({"value": Scalar(float, required=True, minimum=0),
                                         "derivation": Scalar(str, required=True)}))
THRESHOLDS = Section({
    "min_cosine": Scalar(float, minimum=0, maximum=1),
    "min_top1_agreement": Scalar(float, minimum=0, maximum=1),
    "max_abs_error": Scalar(float, nullable=True, minimum=0),
    "max_accuracy_drop": Scalar(float, minimum=0, maximum=1),
})

PROFILE = Section({
    "name": Scalar(str, required=True),
    "extends": Scalar(str, nullable=True),
    "abstract": Scalar(bool),
    "kind": Scalar(str, choices=KINDS),
    "vendor": Scalar(str, choices=VENDORS),
    "arch_family": Scalar(str, choices=ARCH_FAMILIES),
    "description": _str,
    "match": Section({
        "nvml_names": ListOf(_str),
        "cuda_names": ListOf(_str),
        "device_tree": ListOf(_str),
        "amd_product_names": ListOf(_str),
        "k8s_gpu_product": ListOf(_str),
        "gke_accelerator": ListOf(_str),
    }),
    "compute_capability": Scalar(str, nullable=True, what="a string like '7.5'"),
    "memory_gb": _num,
    "memory_bandwidth_gbps": _fig,
    "l2_cache_mb": _fig,
    "host_link_gbps": _fig,
    "unified_memory": Scalar(bool),
    "peak_tflops": PEAKS,
    "peak_basis": _str,
    "derived_tflops": DERIVED,
    "dla_cores": Scalar(int, nullable=True, minimum=0),
    "tdp_w": _fig,
    "precisions": ListOf(_prec, min_len=1, unique=True),
    "default_precision": _prec,
    "quantization": Section({
        "scheme": Scalar(str, choices=("symmetric", "asymmetric")),
        "activation_type": Scalar(str, choices=("int8", "uint8")),
        "weight_type": Scalar(str, choices=("int8", "uint8")),
        "per_channel": Scalar(bool),
        "method": Scalar(str, choices=("minmax", "entropy", "percentile")),
        "reduce_range": Scalar(bool),
    }),
    "memory": Section({
        "reserve_gb": Scalar(float, minimum=0),
        "usable_fraction": Scalar(float, minimum=0.05, maximum=1.0),
        "workspace_gb": Scalar(float, minimum=0),
    }),
    "batch": Section({
        "max_batch_size": Scalar(int, minimum=1),
        "preferred_batch_sizes": ListOf(Scalar(int, minimum=1)),
        "max_batch_delay": Scalar((str, float), what="a duration like '2ms'"),
        "device_concurrency": Scalar(int, minimum=1),
        "max_queue_size": Scalar(int, minimum=0),
        "timeout": Scalar((str, float), nullable=True, what="a duration like '100ms' or null"),
    }),
    "tensorrt": Section({
        "versions": ListOf(Scalar(int, minimum=7), unique=True),
        "builder_optimization_level": Scalar(int, minimum=0, maximum=5),
        "use_dla": Scalar(bool),
        "dla_gpu_fallback": Scalar(bool),
        "hardware_compatibility": Scalar(str, choices=("none", "ampere+")),
    }),
    "backends": ListOf(Scalar(str, choices=BACKENDS), min_len=1, unique=True),
    "kubernetes": Section({
        "cpu": Scalar(float, minimum=0.1, what="CPU cores (a number)"),
        "memory_gb": Scalar(float, minimum=0.25),
        "gpu_resource": Scalar(str, nullable=True, what="an extended resource name like nvidia.com/gpu, or null"),
        "node_selector": Section({}, open_keys=_str),
        "runtime_class": Scalar(str, nullable=True),
    }),
    "accuracy": Section({p: THRESHOLDS for p in PRECISIONS}),
    "price_per_hour_usd": _num,
    "pricing": PRICING,
    "sources": Section({}, open_keys=ListOf(_str, min_len=1)),
    "notes": ListOf(_str),
})


# ----------------------------------------------------------------------------------------------------------
# The validated, frozen objects the rest of the SDK reads.
@dataclasses.dataclass(frozen=True)
class Match:
    nvml_names: tuple[str, ...] = ()
    cuda_names: tuple[str, ...] = ()
    device_tree: tuple[str, ...] = ()
    amd_product_names: tuple[str, ...] = ()  # amdsmi_get_gpu_asic_info(h)["market_name"]
    k8s_gpu_product: tuple[str, ...] = ()
    gke_accelerator: tuple[str, ...] = ()  # GKE's node label cloud.google.com/gke-accelerator


@dataclasses.dataclass(frozen=True)
class MemoryPolicy:
    reserve_gb: float = 1.0
    usable_fraction: float = 0.9
    workspace_gb: float = 1.0


@dataclasses.dataclass(frozen=True)
class QuantizationPolicy:
    scheme: str = "symmetric"
    activation_type: str = "int8"
    weight_type: str = "int8"
    per_channel: bool = True
    method: str = "minmax"
    reduce_range: bool = False


@dataclasses.dataclass(frozen=True)
class TensorRTPolicy:
    versions: tuple[int, ...] = ()
    builder_optimization_level: int = 3
    use_dla: bool = False
    dla_gpu_fallback: bool = True
    hardware_compatibility: str = "none"


@dataclasses.dataclass(frozen=True)
class KubernetesPolicy:
    """Per-replica host resources and scheduling for `xinfer-sdk deploy k8s` (docs/kubernetes.md)."""

    cpu: float = 2.0                       # host cores requested; the CPU engine's thread count on cpu
    memory_gb: float = 2.0                 # host memory floor; a large bundle raises it
    gpu_resource: str | None = None        # extended resource limited to 1 per pod (nvidia.com/gpu)
    node_selector: Mapping[str, str] = dataclasses.field(default_factory=dict)
    runtime_class: str | None = None


@dataclasses.dataclass(frozen=True)
class Thresholds:
    min_cosine: float = 0.99
    min_top1_agreement: float = 0.95
    max_abs_error: float | None = None
    max_accuracy_drop: float = 0.01


DEFAULT_THRESHOLDS = {
    "fp32": Thresholds(min_cosine=0.9999, min_top1_agreement=0.999, max_accuracy_drop=0.001),
    "tf32": Thresholds(min_cosine=0.999, min_top1_agreement=0.99, max_accuracy_drop=0.005),
    "fp16": Thresholds(min_cosine=0.999, min_top1_agreement=0.99, max_accuracy_drop=0.005),
    "bf16": Thresholds(min_cosine=0.995, min_top1_agreement=0.98, max_accuracy_drop=0.01),
    "int8": Thresholds(min_cosine=0.98, min_top1_agreement=0.95, max_accuracy_drop=0.01),
    "fp8": Thresholds(min_cosine=0.98, min_top1_agreement=0.95, max_accuracy_drop=0.01),
}


@dataclasses.dataclass(frozen=True)
class Profile:
    """One hardware target and the policy every other part of the SDK obeys on it."""

    name: str
    kind: str
    description: str
    match: Match
    compute_capability: str | None
    memory_gb: float | None
    memory_bandwidth_gbps: float | None
    unified_memory: bool
    peak_tflops: Mapping[str, float | None]
    peak_basis: str
    derived_tflops: Mapping[str, Mapping[str, Any]]
    dla_cores: int
    tdp_w: float | None
    precisions: tuple[str, ...]
    default_precision: str
    quantization: QuantizationPolicy
    memory: MemoryPolicy
    batch: BatchPolicy
    tensorrt: TensorRTPolicy
    backends: tuple[str, ...]
    accuracy: Mapping[str, Thresholds]
    kubernetes: KubernetesPolicy
    price_per_hour_usd: float | None
    sources: Mapping[str, tuple[str, ...]]
    notes: tuple[str, ...]
    file: str = ""
    extends: str | None = None
    chain: tuple[str, ...] = ()
    vendor: str = "nvidia"
    l2_cache_mb: float | None = None         # on-chip L2 / last-level cache, MB (None: not given or unknown)
    host_link_gbps: float | None = None      # host <-> GPU link per direction, GB/s (None: the PCIe rule of the planner)
    pricing: Mapping[str, Any] | None = None  # the YAML `pricing` section (docs/profiles.md), None when unpriced
    arch_family_override: str | None = None  # the YAML `arch_family`, when the profile states it
    unknown: frozenset[str] = frozenset()    # figure paths written as 'unknown' (exposed as None)

    # -- derived views ---------------------------------------------------------------------------------
    @property
    def sm(self) -> str | None:
        if not self.compute_capability or self.vendor != "nvidia":
            return None
        return "sm_" + self.compute_capability.replace(".", "")

    @property
    def arch_family(self) -> str:
        """The planner's architecture family: stated in the YAML, else derived from the compute capability."""
        if self.arch_family_override:
            return self.arch_family_override
        return arch_family_of(self.compute_capability, kind=self.kind)

    def figure_unknown(self, path: str) -> bool:
        """True when the figure at ``path`` (``peak_tflops.int8``, ``tdp_w``) is 'unknown', not merely absent."""
        return path in self.unknown

    @property
    def usd_per_gpu_hour(self) -> float | None:
        """Price of one GPU-hour: the profile's own ``price_per_hour_usd`` (user or --price) over the sourced one."""
        if self.price_per_hour_usd is not None:
            return float(self.price_per_hour_usd)
        return float(self.pricing["usd_per_gpu_hour"]) if self.pricing else None

    @property
    def gpus_per_instance(self) -> int:
        """GPUs in the instance the sourced price is for (1 when unknown or overridden by price_per_hour_usd)."""
        if self.price_per_hour_usd is not None or not self.pricing:
            return 1
        return int(self.pricing["instance"]["gpus"])

    @property
    def display_name(self) -> str:
        return self.description or self.name

    def peak(self, precision: str) -> tuple[float | None, str]:
        """Dense peak (TFLOPS, TOPS for INT8) and its basis: 'published' or 'derived: <how>'."""
        value = self.peak_tflops.get(precision)
        if value is not None:
            return value, "published"
        d = self.derived_tflops.get(precision)
        if d:
            return float(d["value"]), "derived: " + d["derivation"]
        if self.figure_unknown(f"peak_tflops.{precision}"):
            return None, "unknown (the vendor publishes no dense figure)"
        return None, "not published"

    def usable_memory_gb(self) -> float | None:
        """Memory a model may use: (total - reserve) x usable_fraction; shared with the CPU on Jetson."""
        if self.memory_gb is None:
            return None
        return max(0.0, (self.memory_gb - self.memory.reserve_gb) * self.memory.usable_fraction)

    def check_precision(self, precision: str) -> str:
        """Resolve 'auto' and refuse a precision this hardware has no support for, saying why."""
        if precision in (None, "", "auto"):
            return self.default_precision
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}; expected auto or one of {list(PRECISIONS)}")
        if precision not in self.precisions:
            what = {"fp8": "FP8 tensor cores", "bf16": "BF16 support", "tf32": "TF32 tensor cores",
                    "int8": "INT8 support", "fp16": "FP16 support", "fp32": "FP32 support"}[precision]
            cc = f" ({self.sm})" if self.sm else ""
            raise UserError(f"{self.display_name}{cc} has no {what}; profile '{self.name}' supports "
                            f"{', '.join(self.precisions)}", hint=f"use --precision {self.default_precision}")
        return precision

    def thresholds(self, precision: str) -> Thresholds:
        return self.accuracy.get(precision, DEFAULT_THRESHOLDS.get(precision, Thresholds()))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["batch"] = self.batch.to_dict()
        d["peak_tflops"] = dict(self.peak_tflops)
        d["derived_tflops"] = {k: dict(v) for k, v in self.derived_tflops.items()}
        d["sources"] = {k: list(v) for k, v in self.sources.items()}
        d["usable_memory_gb"] = self.usable_memory_gb()
        d["sm"] = self.sm
        for key in ("precisions", "backends", "notes", "chain"):
            d[key] = list(d[key])
        d["tensorrt"]["versions"] = list(self.tensorrt.versions)
        d["match"] = {k: list(v) for k, v in d["match"].items()}
        d["kubernetes"]["node_selector"] = dict(self.kubernetes.node_selector)
        d["pricing"] = copy.deepcopy(dict(self.pricing)) if self.pricing else None
        d["unknown"] = sorted(self.unknown)
        d.pop("arch_family_override")
        d["arch_family"] = self.arch_family
        d["usd_per_gpu_hour"] = self.usd_per_gpu_hour
        d["gpus_per_instance"] = self.gpus_per_instance
        return d


def validate(raw: Any, file: str) -> dict[str, Any]:
    """Check one YAML document against the schema (types, unknown fields); returns a plain dict."""
    if not isinstance(raw, Mapping):
        raise ProfileError(f"expected a mapping at the top level, got {type(raw).__name__}", file=file)
    data = PROFILE.check(raw, "", file)
    checkpoint()  # while collecting every problem: the rules on the merged profile need a valid schema first
    return data


UNKNOWN_FIGURES = ("memory_bandwidth_gbps", "l2_cache_mb", "host_link_gbps", "tdp_w")


def _known(value: Any) -> Any:
    return None if value == UNKNOWN else value


def build(data: Mapping[str, Any], *, file: str, chain: tuple[str, ...]) -> Profile:
    """Turn a merged, validated dict into the frozen Profile."""
    check_complete(data, file)
    checkpoint()
    unknown = {f for f in UNKNOWN_FIGURES if data.get(f) == UNKNOWN}
    unknown |= {f"peak_tflops.{p}" for p, v in data["peak_tflops"].items() if v == UNKNOWN}
    try:
        batch = BatchPolicy.from_dict(data.get("batch") or {}, source="batch")
    except UserError as exc:
        raise ProfileError(exc.message, file=file) from None
    accuracy = {p: Thresholds(**{**dataclasses.asdict(DEFAULT_THRESHOLDS[p]), **v})
                for p, v in (data.get("accuracy") or {}).items()}
    trt = dict(data.get("tensorrt") or {})
    trt["versions"] = tuple(trt.get("versions", ()))
    m = data.get("match") or {}
    return Profile(
        name=data["name"], kind=data["kind"], description=data.get("description", ""),
        match=Match(**{k: tuple(v) for k, v in m.items()}),
        compute_capability=data.get("compute_capability"), memory_gb=data.get("memory_gb"),
        memory_bandwidth_gbps=_known(data.get("memory_bandwidth_gbps")),
        unified_memory=bool(data.get("unified_memory", data["kind"] != "gpu")),
        peak_tflops={p: _known(data["peak_tflops"].get(p)) for p in PRECISIONS}, peak_basis=data.get("peak_basis", ""),
        derived_tflops=dict(data.get("derived_tflops") or {}), dla_cores=int(data.get("dla_cores") or 0),
        tdp_w=_known(data.get("tdp_w")), precisions=tuple(data["precisions"]), default_precision=data["default_precision"],
        quantization=QuantizationPolicy(**(data.get("quantization") or {})),
        memory=MemoryPolicy(**(data.get("memory") or {})), batch=batch, tensorrt=TensorRTPolicy(**trt),
        backends=tuple(data["backends"]), accuracy=accuracy,
        kubernetes=KubernetesPolicy(**(data.get("kubernetes") or {})), price_per_hour_usd=data.get("price_per_hour_usd"),
        sources={k: tuple(v) for k, v in (data.get("sources") or {}).items()}, notes=tuple(data.get("notes") or ()),
        file=file, extends=data.get("extends"), chain=chain, vendor=data.get("vendor", "nvidia"),
        l2_cache_mb=_known(data.get("l2_cache_mb")), host_link_gbps=_known(data.get("host_link_gbps")), pricing=copy.deepcopy(data.get("pricing")) or None,
        arch_family_override=data.get("arch_family"), unknown=frozenset(unknown),
    )
