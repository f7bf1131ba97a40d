"""Batch policy: the knobs of the one batching core, with Triton's names beside ours.

| ours                    | Triton model config                                    |
|-------------------------|--------------------------------------------------------|
| max_batch_size          | max_batch_size                                         |
| preferred_batch_sizes   | dynamic_batching.preferred_batch_size                  |
| max_batch_delay         | dynamic_batching.max_queue_delay_microseconds          |
| device_concurrency      | instance_group.count                                   |
| max_queue_size          | dynamic_batching.default_queue_policy.max_queue_size   |
| timeout                 | dynamic_batching.default_queue_policy.default_timeout_microseconds |
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from .errors import UserError

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|µs|ms|s|m|h)?\s*$")
_UNIT_S = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

# Keys the seed's quick-start config.yaml uses, mapped onto ours.
SEED_ALIASES = {"batch_size": "max_batch_size", "max_workers": "device_concurrency",
                "preferred_batch_size": "preferred_batch_sizes", "max_queue_delay": "max_batch_delay"}


def parse_duration(value: Any, *, field: str = "duration") -> float:
    """'2ms' / '500us' / '1.5s' / 0.002 -> seconds (float). Bare numbers are seconds."""
    if isinstance(value, bool):
        raise UserError(f"{field}: expected a duration like '2ms' or '1.5s', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise UserError(f"{field}: a duration cannot be negative, got {value!r}")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNIT_S[m.group(2)]
    raise UserError(f"{field}: expected a duration like '2ms', '500us' or '1.5s', got {value!r}")


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0ms"
    if seconds < 1e-3:
        return f"{seconds * 1e6:g}us"
    if seconds < 1:
        return f"{round(seconds * 1e3, 6):g}ms"
    return f"{round(seconds, 6):g}s"


@dataclasses.dataclass(frozen=True)
class BatchPolicy:
    """How requests are queued and merged into batches (Triton dynamic-batcher semantics).

    A batch is dispatched when it reaches ``max_batch_size``, when a preferred size is reached and no
    more requests wait, or when the oldest request has waited ``max_batch_delay``.
    """

    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = ()
    max_batch_delay: float = 0.002
    device_concurrency: int = 1
    max_queue_size: int = 1024
    timeout: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_batch_delay", parse_duration(self.max_batch_delay, field="max_batch_delay"))
        if self.timeout is not None:
            object.__setattr__(self, "timeout", parse_duration(self.timeout, field="timeout"))
        prefs = self.preferred_batch_sizes
        if isinstance(prefs, int):
            prefs = (prefs,)
        object.__setattr__(self, "preferred_batch_sizes", tuple(sorted(set(int(p) for p in prefs))))
        for name in ("max_batch_size", "device_concurrency"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(f"{name}: expected an integer >= 1, got {v!r}")
        if not isinstance(self.max_queue_size, int) or isinstance(self.max_queue_size, bool) or self.max_queue_size < 0:
            raise UserError(f"max_queue_size: expected an integer >= 0 (0 = unbounded), got {self.max_queue_size!r}")
        bad = [p for p in self.preferred_batch_sizes if p < 1 or p > self.max_batch_size]
        if bad:
            raise UserError(f"preferred_batch_sizes: {bad} must lie in 1..max_batch_size ({self.max_batch_size})")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base: BatchPolicy | None = None, source: str = "batch") -> BatchPolicy:
        """Build from a mapping (profile ``batch:`` section or the seed's config.yaml keys) over ``base``."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = dataclasses.asdict(base) if base is not None else {}
        for key, value in data.items():
            name = SEED_ALIASES.get(key, key)
            if name not in known:
                raise UserError(f"{source}.{key}: unknown batch-policy field; expected one of {sorted(known)}")
            values[name] = tuple(value) if name == "preferred_batch_sizes" and isinstance(value, list) else value
        try:
            return cls(**values)
        except UserError as exc:
            raise UserError(f"{source}.{exc.message}") from None
        except TypeError as exc:
            raise UserError(f"{source}: {exc}") from None

    def replace(self, **changes: Any) -> BatchPolicy:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["preferred_batch_sizes"] = list(self.preferred_batch_sizes)
        d["max_batch_delay"] = format_duration(self.max_batch_delay)
        d["timeout"] = None if self.timeout is None else format_duration(self.timeout)
        return d
