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
                example = f"{name or entry or 'NAME'}:1x8..32x128..64x512" if ":" not in entry or name else \
                    "NAME:1x8..32x128..64x512"
                raise UserError(f"--shapes {entry!r}: expected NAME:MIN..OPT..MAX (the input's own name), "
                                f"e.g. {example}")
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


_FORMS = ("'NAME:MIN..OPT..MAX' text (e.g. 'x:1x3x224x224', entries separated by commas), a list of such "
          "entries, or a dict of input name -> '1x3x224x224' / '1x8..32x128' / [1, 3, 224, 224] / "
          "{'min': [...], 'opt': [...], 'max': [...]}")


def _dims(value: object, where: str) -> Shape:
    if isinstance(value, (list, tuple)) and value and all(isinstance(d, int) and not isinstance(d, bool)
                                                           for d in value):
        if any(d < 1 for d in value):
            raise UserError(f"{where}: every dimension must be >= 1, got {list(value)}")
        return tuple(value)
    raise UserError(f"{where}: expected a shape like [1, 3, 224, 224] or '1x3x224x224', got {value!r}")


def coerce_shapes(shapes: object, *, arg: str = "shapes=") -> dict[str, ShapeRange]:
    """Every form the Python API accepts for shape ranges -> {input name: ShapeRange}; anything else is one
    UserError line naming the argument and the accepted forms (never a ValueError / AttributeError)."""
    if shapes is None:
        return {}
    if isinstance(shapes, str):
        return parse_shapes(shapes)
    if isinstance(shapes, Mapping):
        out: dict[str, ShapeRange] = {}
        for name, v in shapes.items():
            where = f"{arg} input {name!r}"
            if not isinstance(name, str) or not name:
                raise UserError(f"{arg} keys must be input names (text), got {name!r}")
            if isinstance(v, ShapeRange):
                out[name] = v
            elif isinstance(v, str):
                if ":" in v:
                    raise UserError(f"{where}: give only the shape ('1x3x224x224' or '1x8..32x128'), not {v!r}")
                out[name] = parse_shapes(f"{name}:{v}")[name]
            elif isinstance(v, Mapping) and set(v) <= {"min", "opt", "max"} and {"min", "max"} <= set(v):
                lo, hi = _dims(v["min"], where), _dims(v["max"], where)
                out[name] = ShapeRange(lo, _dims(v.get("opt", v["max"]), where), hi)
            elif isinstance(v, (list, tuple)):
                out[name] = ShapeRange.fixed(_dims(v, where))
            else:
                raise UserError(f"{where}: {v!r} is not a shape; expected {_FORMS}")
        return out
    if isinstance(shapes, (list, tuple)) and all(isinstance(e, str) for e in shapes):
        return parse_shapes(shapes)
    raise UserError(f"{arg} got {type(shapes).__name__} {shapes!r}; expected {_FORMS}")


def check_names(shapes: Mapping[str, ShapeRange], known: Iterable[str]) -> None:
    """Refuse ranges for inputs the model does not have, naming the ones it does."""
    known = list(known)
    for name in shapes:
        if name not in known:
            raise UserError(f"--shapes: the model has no input {name!r}; its inputs are {', '.join(known)}")


def concrete_dims(spec, *, batch: int, shapes: Mapping[str, ShapeRange], batched: bool, which: str = "opt",
                  example: Mapping[str, object] | None = None, labels: dict[str, int] | None = None,
                  image_default: bool = False) -> list[int]:
    """One input's dims for a concrete run: ``batch`` on the input's batch axis (``batch_axis``, 0 unless said)
    when the model batches, fixed dims as they are,
    a dynamic dim from its ``--shapes`` range (``which`` of min/opt/max), else from ``example`` (an array of that
    input), else from another input's dim with the same symbolic name (``labels`` collects them across calls).
    With ``image_default``, the unsized height and width of an image-like input (``image_axes``) are
    ``IMAGE_SIDE[1]`` (224). Raises UserError naming the input and a --shapes example from its own dims when
    nothing sizes a dynamic dim."""
    given = shapes.get(spec.name)
    ex_shape = None
    if example is not None and spec.name in example:
        ex_shape = tuple(int(d) for d in getattr(example[spec.name], "shape", ()))
    dims: list[int] = []
    for axis, d in enumerate(spec.shape):
        label = spec.dim_names[axis] if axis < len(spec.dim_names) else None
        if batched and axis == _batch_axis(spec, batched):
            dims.append(batch)
            continue
        if d >= 0:
            dims.append(d)
        elif given is not None:
            dims.append(getattr(given, which)[axis])
        elif ex_shape is not None and axis < len(ex_shape):
            dims.append(ex_shape[axis])
        elif labels is not None and label in labels:
            dims.append(labels[label])
        elif image_default and axis in image_axes(spec, batched=batched):
            dims.append(IMAGE_SIDE[1])
        else:
            raise UserError(f"input {spec.name!r} has a dynamic axis {axis}{f' ({label})' if label else ''} and "
                            f"nothing gives its size", hint=f"pass {shapes_hint(spec, batched=batched)}")
        if labels is not None and label:
            labels.setdefault(label, dims[-1])
    return dims


# Sizes for a spatial axis of an image input that nothing sizes: a multiple of 32, as detectors and segmenters
# (DBNet, YOLO, U-Net) need for their strided feature maps.
IMAGE_SIDE = (32, 224, 1280)
_OTHER = (1, 128, 512)


def _batch_axis(spec, batched: bool) -> int | None:
    if not batched:
        return None
    return getattr(spec, "batch_axis", 0)


def image_axes(spec, *, batched: bool) -> tuple[int, ...]:
    """The dynamic height and width axes of an image-like input ([N, C, H, W] or [N, H, W, C] with 1, 3 or 4
    channels), else ()."""
    shape = tuple(spec.shape)
    if len(shape) != 4 or _batch_axis(spec, batched) not in (0, None):
        return ()
    if shape[1] in (1, 3, 4) and shape[2] < 0 and shape[3] < 0:
        return (2, 3)
    if shape[3] in (1, 3, 4) and shape[1] < 0 and shape[2] < 0:
        return (1, 2)
    return ()


def shapes_hint(spec, *, batched: bool, max_batch: int = 32) -> str:
    """A ``--shapes`` example for this very input, from its own name and dims: fixed dims as they are, the batch
    axis 1..8..max_batch, image sides 32..224..1280, other dynamic dims 1..128..512 (e.g.
    ``--shapes x:1x3x32x32..8x3x224x224..32x3x1280x1280``)."""
    shape = tuple(spec.shape)
    if not shape:
        return f"--shapes cannot size {spec.name!r}: it is a scalar"
    image = image_axes(spec, batched=batched)
    batch_axis = _batch_axis(spec, batched)
    parts: list[list[int]] = [[], [], []]
    for axis, d in enumerate(shape):
        if axis == batch_axis:
            values = (1, min(8, max_batch), max_batch)
        elif d >= 0:
            values = (d, d, d)
        else:
            values = IMAGE_SIDE if axis in image else _OTHER
        for part, v in zip(parts, values):
            part.append(v)
    return f"--shapes {spec.name}:" + "..".join("x".join(map(str, p)) for p in parts)
