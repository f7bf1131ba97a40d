"""What a build was asked for (``BuildOptions``, resolved once) and what its steps made (``BuildContext``)."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.policy import BatchPolicy
from xinfer_sdk.profiles import Profile, Thresholds
from xinfer_sdk.shapes import ShapeRange

# --output-kind / --pad for builds started inside ``requested(...)`` (callers that cannot pass
# ``builder.build(output_kinds=..., padding=...)`` themselves); BuildOptions' fields start from them.
REQUESTED: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar("build_requested", default=None)


def _requested(key: str, default: Any = None) -> Any:
    value = (REQUESTED.get() or {}).get(key)
    return default() if value is None and callable(default) else (default if value is None else value)


@contextlib.contextmanager
def requested(**options: Any) -> Iterator[None]:
    """Builds started inside take these options (``output_kinds={...}``, ``padding={...}``)."""
    token = REQUESTED.set(dict(options))
    try:
        yield
    finally:
        REQUESTED.reset(token)


CALIB_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_CALIB_SAMPLES = 256
DEFAULT_EVAL_FRACTION = 0.2  # held out of --calib for the gate when no --eval is given
SYNTHETIC_SAMPLES = 16  # random inputs for the FP16 gate when no data was given


@dataclasses.dataclass
class BuildOptions:
    model: Any  # path / "module:factory" / torch.nn.Module / onnx.ModelProto
    profile: Profile
    precision: str  # fp32 | fp16 | bf16 | int8 | fp8 (resolved and checked against the profile)
    output: Path
    name: str
    batch: BatchPolicy  # the profile's policy with max_batch_size overridden
    shapes: dict[str, ShapeRange] = dataclasses.field(default_factory=dict)
    dynamic_axes: dict[str, dict[int, str]] = dataclasses.field(default_factory=dict)
    dtypes: dict[str, str] = dataclasses.field(default_factory=dict)
    input_names: list[str] | None = None
    output_names: list[str] | None = None
    weights: str | None = None  # state_dict for module:factory, read with torch.load(weights_only=True)
    signature: str | None = None  # TensorFlow SavedModel signature (default: serving_default, or the only one)
    opset: int | None = None
    calib: Any = None
    eval: Any = None
    calib_method: str = "minmax"
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    per_channel: bool = True
    eval_fraction: float = DEFAULT_EVAL_FRACTION
    thresholds: Thresholds = dataclasses.field(default_factory=Thresholds)
    labels_output: str | None = None
    # {output: kind} from --output-kind (converters/kinds.py); the rest is inferred from the graph
    output_kinds: dict[str, str] = dataclasses.field(default_factory=lambda: dict(_requested("output_kinds", dict)))
    # padded batching to check and record (--pad; converters/padding.py); None = requests merge only when equal
    padding: dict[str, Any] | None = dataclasses.field(default_factory=lambda: _requested("padding"))
    fp16_block_ops: tuple[str, ...] = ()
    build_engine: bool = True
    progress: Callable[[int, int, str], None] | None = None

    @property
    def max_batch_size(self) -> int:
        return self.batch.max_batch_size


@dataclasses.dataclass
class BuildContext:
    options: BuildOptions
    staging: Path  # the bundle folder being written
    scratch: Path  # temporary files (removed after the build)
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    torch_model: Any = None
    tf_model: Any = None  # tensorflow.Signature of a SavedModel / Keras input
    example: dict[str, Any] | None = None  # example inputs for export, by input name (numpy arrays)
    raw_onnx: Path | None = None  # the FP32 graph as given or exported
    fp32_onnx: Path | None = None  # cleaned FP32 graph (reference.onnx of a reduced-precision build)
    model_onnx: Path | None = None  # the deployable graph (model.onnx)
    inputs: list[TensorSpec] = dataclasses.field(default_factory=list)
    outputs: list[TensorSpec] = dataclasses.field(default_factory=list)
    batched: bool = False
    calib_data: Any = None  # calibration.Dataset
    eval_data: Any = None
    calibration: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None
    padding: dict[str, Any] | None = None  # the checked --pad declaration (converters/padding.py)
    budget: dict[str, Any] | None = None
    engine_plan: dict[str, Any] | None = None
    engines: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # {"path": Path, "role", "meta"}
    tools: dict[str, str] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def profile(self) -> Profile:
        return self.options.profile

    @property
    def precision(self) -> str:
        return self.options.precision

    def progress(self, done: int, total: int, label: str) -> None:
        if self.options.progress is not None:
            self.options.progress(done, total, label)
