"""Shape ranges for dynamic axes: ``--shapes input_ids:1x8..32x128..64x512``.

One entry per input, ``NAME:MIN..OPT..MAX`` where each part is a shape like ``32x128``; ``NAME:MIN..MAX``
uses MAX as OPT; ``NAME:SHAPE`` fixes the shape. Entries are separated by commas (or given repeatedly).
The same ranges drive the ONNX export's example input, TensorRT optimization profiles, the memory budget
and the planner.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from .errors import UserError

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ShapeRange:
    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise UserError(f"shape range {self}: min, opt and max must have the same rank")
        for lo, mid, hi in zip(self.min, self.opt, self.max):
            if not (1 <= lo <= mid <= hi):
                raise UserError(f"shape range {self.text()}: need 1 <= min <= opt <= max on every axis")

    def text(self) -> str:
        def j(s):
            return "x".join(map(str, s))
        return f"{j(self.min)}..{j(self.opt)}..{j(self.max)}"

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def fixed(cls, shape: Sequence[int]) -> ShapeRange:
        s = tuple(int(d) for d in shape)
        return cls(s, s, s)


def _parse_shape(text: str, entry: str) -> Shape:
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--shapes {entry!r}: {text!r} is not a shape like 32x128 (dims separated by 'x')") from None
    if not dims or any(d < 1 for d in dims):
        raise UserError(f"--shapes {entry!r}: every dimension must be >= 1")
    return dims


def parse_shapes(specs: str | Iterable[str] | None) -> dict[str, ShapeRange]:
    """Parse ``--shapes`` entries into {input name: ShapeRange}."""
    if specs is None:
        return {}
    items = [specs] if isinstance(specs, str) else list(specs)
    out: dict[str, ShapeRange] = {}
    for item in items:
        for entry in filter(None, (e.strip() for e in item.split(","))):
            name, sep, rng = entry.rpartition(":")
            if not sep or not name or not rng:
                raise UserError(f"--shapes {entry!r}: expected NAME:MIN..OPT..MAX, e.g. input_ids:1x8..32x128..64x512")
            parts = [_parse_shape(p, entry) for p in rng.split("..")]
            if len(parts) == 1:
                r = ShapeRange(parts[0], parts[0], parts[0])
            elif len(parts) == 2:
                r = ShapeRange(parts[0], parts[1], parts[1])
            elif len(parts) == 3:
                r = ShapeRange(*parts)
            else:
                raise UserError(f"--shapes {entry!r}: at most three shapes (MIN..OPT..MAX)")
            if name in out:
                raise UserError(f"--shapes: input {name!r} is given twice")
            out[name] = r
    return out


def check_names(shapes: Mapping[str, ShapeRange], known: Iterable[str]) -> None:
    """Refuse ranges for inputs the model does not have, naming the ones it does."""
    known = list(known)
    for name in shapes:
        if name not in known:
            raise UserError(f"--shapes: the model has no input {name!r}; its inputs are {', '.join(known)}")
