"""Calibration and evaluation data: read ``--calib`` / ``--eval``, check it against the model's inputs.

Accepted sources:

- ``data.npz``: one array per input name, samples along axis 0 (``np.savez(f, input_ids=..., attention_mask=...)``);
  an optional ``labels`` array gives true accuracy in the gate;
- a folder of ``.npy`` files: ``<input name>.npy`` per input (+ ``labels.npy``), or, for a one-input model,
  any number of ``*.npy`` files (each one sample or a batch), read in name order;
- ``module:function`` (or ``path/file.py:function``): a function returning an iterable of dicts
  ``{input name: array, "labels": array?}``, each one sample or a batch;
- from Python, a dict of arrays or an iterable of such dicts.

An array whose rank is the input's rank is a batch; one rank lower is a single sample.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xinfer_sdk.bundle import TensorSpec, sha256_file
from xinfer_sdk.errors import CalibrationError

log = logging.getLogger(__name__)

LABELS = "labels"
_LABEL_KEYS = ("labels", "label", "y")


@dataclasses.dataclass
class Dataset:
    """Samples in chunks (each a dict of arrays with the same leading count), labels alongside."""

    chunks: list[dict[str, np.ndarray]]
    labels: list[np.ndarray | None]
    source: dict[str, Any]
    batched: bool = True  # False: the model has no batch axis; samples are stacked on axis 0, fed one by one
    # a batched model's inputs whose batch axis is not 0 ({name: axis}): stored with samples on axis 0, fed on theirs
    axes: dict[str, int] = dataclasses.field(default_factory=dict)
    # a batched model's inputs without a batch axis (a scalar sample rate): one value, added to every feed
    constants: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(_lead(c) for c in self.chunks)

    @property
    def has_labels(self) -> bool:
        return bool(self.chunks) and all(lab is not None for lab in self.labels)

    def _slice(self, start: int, stop: int) -> Dataset:
        chunks, labels, pos = [], [], 0
        for c, lab in zip(self.chunks, self.labels):
            n = _lead(c)
            lo, hi = max(start - pos, 0), min(stop - pos, n)
            if lo < hi:
                chunks.append({k: v[lo:hi] for k, v in c.items()})
                labels.append(None if lab is None else lab[lo:hi])
            pos += n
        return Dataset(chunks, labels, dict(self.source), self.batched, self.axes, self.constants)

    def take(self, n: int) -> Dataset:
        return self._slice(0, n)

    def split(self, held_out: int) -> tuple[Dataset, Dataset]:
        """(first count - held_out samples, last held_out samples)."""
        n = self.count
        return self._slice(0, n - held_out), self._slice(n - held_out, n)

    def batches(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        """Feeds for the model: up to ``size`` samples each (one sample each for an unbatched model)."""
        for c in self.chunks:
            n = _lead(c)
            if not self.batched:
                for i in range(n):
                    yield {k: v[i] for k, v in c.items()}
                continue
            for i in range(0, n, max(1, size)):
                feed = {k: np.moveaxis(v[i:i + size], 0, self.axes[k]) if self.axes.get(k) else v[i:i + size]
                        for k, v in c.items()}
                yield {**feed, **self.constants}

    def label_array(self) -> np.ndarray | None:
        if not self.has_labels:
            return None
        return np.concatenate([np.asarray(lab) for lab in self.labels], axis=0)

    def fingerprint(self) -> str:
        """sha256 over the arrays actually used (names, dtypes, shapes and bytes), for provenance."""
        h = hashlib.sha256()
        for c in [*self.chunks, self.constants]:
            for k in sorted(c):
                v = np.ascontiguousarray(c[k])
                h.update(f"{k}:{v.dtype.str}:{v.shape};".encode())
                h.update(v.tobytes())
        return h.hexdigest()


def _lead(chunk: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(chunk.values())).shape[0]) if chunk else 0


# ----------------------------------------------------------------------------------------------------------
def load(spec: Any, inputs: Sequence[TensorSpec], *, batched: bool, what: str = "--calib",
         limit: int | None = None) -> Dataset:
    """Read ``spec`` and check it against ``inputs``: names, dtypes (safe casts only), ranks, fixed dims."""
    names = [t.name for t in inputs]
    records, source = read_records(spec, input_names=names, what=what, limit=limit)
    chunks, labels, constants = [], [], {}
    for i, rec in enumerate(records):
        where = f"{source['what']} record {i}"
        chunk, lab = _normalize(rec, inputs, batched=batched, what=what, where=where)
        for spec in inputs if batched else ():  # an input without a batch axis: one value for all samples
            if spec.batch_axis is None and spec.name in chunk:
                value = chunk.pop(spec.name)
                if spec.name in constants and not np.array_equal(constants[spec.name], value):
                    raise CalibrationError(f"{what}: {where}: {spec.name} has no batch axis, so it must be the same "
                                           f"in every record ({constants[spec.name]} vs {value})")
                constants[spec.name] = value
        chunks.append(chunk)
        labels.append(lab)
    axes = {s.name: s.batch_axis for s in inputs if batched and s.batch_axis}
    ds = Dataset(chunks, labels, source, batched, axes, constants)
    if ds.count == 0:
        raise CalibrationError(f"{what} {source['what']}: no samples found")
    if limit is not None and ds.count > limit:
        ds = ds.take(limit)
    return ds


def read_records(spec: Any, *, input_names: Sequence[str] | None, what: str = "--calib",
                 limit: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Raw records (dicts of arrays; labels under 'labels') from any accepted source, and provenance."""
    if isinstance(spec, Mapping):
        return [dict(spec)], {"what": "in-memory arrays", "kind": "arrays"}
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        path = Path(text)
        if path.is_file() and path.suffix.lower() == ".npz":
            return _read_npz(path, input_names, what), {"what": str(path), "kind": "npz", "path": str(path.resolve()),
                                                        "sha256": sha256_file(path)}
        if path.is_file() and path.suffix.lower() == ".npy":
            return _read_npy_files([path], input_names, what), {"what": str(path), "kind": "npy",
                                                                "path": str(path.resolve()), "sha256": sha256_file(path)}
        if path.is_dir():
            return _read_dir(path, input_names, what)
        module, sep, attr = text.rpartition(":")
        if sep and module and attr.isidentifier():
            return _read_function(text, module, attr, what, limit), {"what": text, "kind": "function",
                                                                      "function": text}
        raise CalibrationError(f"{what} {text!r}: no such file or folder (expected an .npz, a folder of .npy "
                               "files, or module:function)")
    if isinstance(spec, Iterable):
        return _collect(spec, what, limit), {"what": "in-memory iterable", "kind": "iterable"}
    raise CalibrationError(f"{what}: cannot read calibration data from a {type(spec).__name__}")


def _read_npz(path: Path, names: Sequence[str] | None, what: str) -> list[dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise CalibrationError(f"{what} {path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    return [_map_single(arrays, names, what, str(path))]


def _read_dir(path: Path, names: Sequence[str] | None, what: str):
    files = sorted(path.glob("*.npy"))
    if not files:
        raise CalibrationError(f"{what} {path}: the folder has no .npy files")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + sha256_file(f).encode())
    source = {"what": str(path), "kind": "npy-folder", "path": str(path.resolve()), "files": len(files),
              "sha256": digest.hexdigest()}
    by_stem = {f.stem: f for f in files}
    if names and all(n in by_stem for n in names):
        arrays = {n: _npy(by_stem[n], what) for n in names}
        for key in _LABEL_KEYS:
            if key in by_stem:
                arrays[LABELS] = _npy(by_stem[key], what)
                break
        return [arrays], source
    return _read_npy_files(files, names, what), source


def _read_npy_files(files: Sequence[Path], names: Sequence[str] | None, what: str) -> list[dict[str, Any]]:
    if names is not None and len(names) != 1:
        raise CalibrationError(f"{what}: the model has inputs {', '.join(names)}; give one file per input named "
                               f"{', '.join(n + '.npy' for n in names)} (or an .npz with those keys)")
    name = names[0] if names else "input"
    return [{name: _npy(f, what)} for f in files]


def _npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise CalibrationError(f"{what} {path}: not a readable .npy ({type(exc).__name__}: {exc})") from None


def _read_function(text: str, module: str, attr: str, what: str, limit: int | None) -> list[dict[str, Any]]:
    from .inputs import _import

    try:
        fn = getattr(_import(module), attr, None)
    except Exception as exc:  # ConversionError from _import: report it as a data problem
        raise CalibrationError(f"{what} {text}: {exc}") from None
    if fn is None or not callable(fn):
        raise CalibrationError(f"{what} {text}: {module!r} has no callable {attr!r}")
    try:
        produced = fn()
    except Exception as exc:
        raise CalibrationError(f"{what} {text}: the function raised {type(exc).__name__}: {exc}") from None
    if isinstance(produced, Mapping):
        return [dict(produced)]
    if not isinstance(produced, Iterable):
        raise CalibrationError(f"{what} {text}: expected an iterable of dicts, got {type(produced).__name__}")
    return _collect(produced, f"{what} {text}", limit)


def _collect(items: Iterable[Any], what: str, limit: int | None) -> list[dict[str, Any]]:
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise CalibrationError(f"{what}: item {i} is a {type(item).__name__}, expected a dict of arrays by "
                                   "input name")
        out.append(dict(item))
        if limit is not None and len(out) >= limit:
            break  # each record holds at least one sample
    return out


def _map_single(arrays: dict[str, np.ndarray], names: Sequence[str] | None, where: str, what: str):
    """A one-input model may take an .npz whose only (non-label) array has another name (np.savez(f, x))."""
    data = {k: v for k, v in arrays.items() if k not in _LABEL_KEYS}
    if names and len(names) == 1 and names[0] not in data and len(data) == 1:
        arrays = {names[0]: next(iter(data.values())), **{k: v for k, v in arrays.items() if k in _LABEL_KEYS}}
    return arrays


# ----------------------------------------------------------------------------------------------------------
def _normalize(rec: Mapping[str, Any], inputs: Sequence[TensorSpec], *, batched: bool, what: str, where: str):
    names = [t.name for t in inputs]
    missing = [n for n in names if n not in rec]
    if missing:
        found = ", ".join(k for k in rec if k not in _LABEL_KEYS) or "nothing"
        raise CalibrationError(f"{what}: {where} has no data for input(s) {', '.join(missing)} (found: {found}); "
                               f"the model's inputs are {', '.join(names)}")
    chunk: dict[str, np.ndarray] = {}
    for spec in inputs:
        arr = _as_array(rec[spec.name], spec, what, where)
        rank = len(spec.shape)
        if batched and spec.batch_axis is None:  # given once, as the model takes it (a scalar sample rate)
            if arr.shape != tuple(spec.shape) and not (arr.ndim == rank and all(
                    w < 0 or g == w for g, w in zip(arr.shape, spec.shape))):
                raise CalibrationError(f"{what}: {where}: {spec.name} has shape {arr.shape}; it has no batch axis, "
                                       f"so give it once, as the model takes it: {_shape_text(spec)}")
            chunk[spec.name] = arr
            continue
        if batched:  # samples along the model's own batch axis, stored on axis 0
            axis = spec.batch_axis
            if arr.ndim == rank - 1:
                arr = np.expand_dims(arr, axis)
            if arr.ndim == rank and axis:
                arr = np.moveaxis(arr, axis, 0)
            expect = tuple(d for i, d in enumerate(spec.shape) if i != axis)
        else:  # an unbatched model: samples are stacked on a new axis 0 and fed one at a time
            if arr.ndim == rank:
                arr = arr[None]
            rank += 1
            expect = spec.shape
        if arr.ndim != rank:
            one = rank - 1
            raise CalibrationError(f"{what}: {where}: {spec.name} has shape {arr.shape}, the model expects "
                                   f"{_shape_text(spec)} (rank {rank if batched else one} per batch, "
                                   f"or {one - 1 if batched else one} for one sample)")
        for axis, (got, want) in enumerate(zip(arr.shape[1:], expect)):
            if want > 0 and got != want:
                raise CalibrationError(f"{what}: {where}: {spec.name} axis {axis + (1 if batched else 0)} is {got}, "
                                       f"the model fixes it to {want} (shape {_shape_text(spec)})")
        chunk[spec.name] = arr
    unbatched = {s.name for s in inputs if batched and s.batch_axis is None}
    counts = {n: a.shape[0] for n, a in chunk.items() if n not in unbatched}
    if len(set(counts.values())) > 1:
        raise CalibrationError(f"{what}: {where}: inputs disagree on the number of samples {counts}")
    labels = None
    for key in _LABEL_KEYS:
        if key in rec and key not in names:
            labels = np.asarray(rec[key])
            if labels.ndim == 0:
                labels = labels[None]
            if labels.shape[0] != next(iter(counts.values())):
                raise CalibrationError(f"{what}: {where}: {labels.shape[0]} labels for "
                                       f"{next(iter(counts.values()))} samples")
            break
    return chunk, labels


def _as_array(value: Any, spec: TensorSpec, what: str, where: str) -> np.ndarray:
    arr = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    want = np.dtype(spec.dtype)
    if arr.dtype == want:
        return arr
    safe = (arr.dtype.kind == want.kind == "f") or (arr.dtype.kind in "iub" and want.kind in "iu") or (
        arr.dtype.kind in "iub" and want.kind == "f")
    if not safe:
        raise CalibrationError(f"{what}: {where}: {spec.name} is {arr.dtype}, the model takes {want} "
                               f"(convert it, e.g. arr.astype(np.{want.name}))")
    if arr.dtype.kind in "iu" and want.kind in "iu" and arr.size:
        info = np.iinfo(want)
        if arr.min() < info.min or arr.max() > info.max:
            raise CalibrationError(f"{what}: {where}: {spec.name} has values outside {want.name}")
    return arr.astype(want)


def _shape_text(spec: TensorSpec) -> str:
    return "x".join("?" if d < 0 else str(d) for d in spec.shape)


def synthetic(inputs: Sequence[TensorSpec], **kwargs: Any) -> Dataset:
    """Random inputs that look like the model's (converters/synthetic.py)."""
    from .synthetic import synthetic as make

    return make(inputs, **kwargs)
