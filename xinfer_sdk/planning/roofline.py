"""The roofline's shared pieces: a sourced factor, and how compute and memory time of one op combine."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

ROOFLINE_P = 2.0  # see ``device``'s docstring: how compute and memory time of one op combine


def soft_max(t_c: np.ndarray, t_m: np.ndarray, p: float = ROOFLINE_P) -> np.ndarray:
    """(t_c^p + t_m^p)^(1/p): a smooth roofline between the sharp max (perfect overlap) and the sum (none, p = 1).
    The CPU model uses ``ROOFLINE_P``; the GPU model a p fitted to published results (``roofline_p``)."""
    t_c, t_m = np.asarray(t_c, dtype=float), np.asarray(t_m, dtype=float)
    top = np.maximum(t_c, t_m)
    safe = np.where(top > 0, top, 1.0)  # scaled by the larger term: no underflow of tiny times at a large p
    out = np.where(top > 0, safe * ((t_c / safe) ** p + (t_m / safe) ** p) ** (1.0 / p), 0.0)
    return float(out) if out.ndim == 0 else out  # scalars in, a Python float out (JSON reports carry it)


@dataclasses.dataclass(frozen=True)
class Factor:
    """One figure of the device model and where it comes from (shown by ``plan --explain``)."""

    value: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source}
