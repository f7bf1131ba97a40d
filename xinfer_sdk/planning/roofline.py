"""The roofline's shared pieces: a sourced factor, and how compute and memory time of one op combine."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

ROOFLINE_P = 2.0  # see ``device``'s docstring: how compute and memory time of one op combine


def soft_max(t_c: np.ndarray, t_m: np.ndarray) -> np.ndarray:
    """(t_c^p + t_m^p)^(1/p): a smooth roofline between the sharp max (perfect overlap) and the sum (none)."""
    return (t_c ** ROOFLINE_P + t_m ** ROOFLINE_P) ** (1.0 / ROOFLINE_P)


@dataclasses.dataclass(frozen=True)
class Factor:
    """One figure of the device model and where it comes from (shown by ``plan --explain``)."""

    value: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source}
