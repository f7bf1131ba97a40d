"""What ``plan()`` returns: the memory fit, one profile's plan, the whole plan (plain dataclasses).

Kept apart from ``planner`` (which computes them) and ``explain`` (which describes them) so both import
these types in one direction.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..profiles import Profile
from .bill import Bill, hourly_cost, make_bill
from .cost import CostCurve
from .device import BatchTime, DeviceModel
from .recommend import Choice


@dataclasses.dataclass
class MemoryFit:
    usable_bytes: float | None
    usable_basis: str
    weights_bytes: float
    weights_per_worker: bool  # CPU: each worker's session holds its own weights; GPU: contexts share one engine
    activation_per_sample: float
    activation_fixed: float
    io_per_sample: float
    max_batch: int  # largest batch that fits with one worker (0: not even batch 1)
    seed_rule_bytes: float
    seed_rule_ok: bool | None
    total_bytes: float | None

    def need(self, b: int, workers: int = 1) -> float:
        copies = workers if self.weights_per_worker else 1
        return self.weights_bytes * copies + workers * (self.activation_fixed + (self.activation_per_sample
                                                                                 + self.io_per_sample) * b)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ProfilePlan:
    profile: Profile
    precision: str
    device: DeviceModel
    curve: CostCurve
    table: list[BatchTime]
    memory: MemoryFit
    choice: Choice
    explain: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    bound: dict[str, str] = dataclasses.field(default_factory=dict)  # what limits batch 1 and the chosen batch
    calibration: dict[str, Any] | None = None

    @property
    def devices(self) -> int | None:
        return self.choice.replicas

    @property
    def cost_per_hour(self) -> float | None:
        """USD per hour of the devices needed, in whole instances (``bill.hourly_cost``); None without a price."""
        return hourly_cost(self.profile, self.choice.replicas)

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile.name, "device_name": self.profile.display_name, "kind": self.profile.kind,
            "precision": self.precision, "device_model": self.device.to_dict(), "cost": self.curve.summary(),
            "table": [bt.to_dict() | {"memory_bytes": self.memory.need(bt.batch), "fits": bt.batch <= self.memory.max_batch}
                      for bt in self.table],
            "memory": self.memory.to_dict(), "bound": self.bound,
            "recommendation": self.choice.to_dict(), "price_per_hour_usd": self.profile.price_per_hour_usd,
            "cost_per_hour_usd": self.cost_per_hour, "calibration": self.calibration,
            "explain": [{"figure": f, "value": v, "derivation": d} for f, v, d in self.explain],
        }


@dataclasses.dataclass
class Plan:
    model: str
    p99: float
    target_qps: float | None
    plans: list[ProfilePlan]
    best: dict[str, Any]
    notes: list[str]
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)  # {"profile", "reason"}: not plannable
    warnings: list[str] = dataclasses.field(default_factory=list)  # what the figures leave out (uncosted nodes)

    @property
    def bill(self) -> Bill:
        """$/h, $ per 1M inferences, instances per profile; the cheapest and the fewest-devices choice."""
        return make_bill(self)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "slo": {"p99_s": self.p99, "target_qps": self.target_qps},
                "profiles": [p.to_dict() for p in self.plans], "best": self.best, "notes": self.notes,
                "warnings": self.warnings, "skipped": self.skipped, "bill": self.bill.to_dict()}
