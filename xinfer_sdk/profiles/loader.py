"""Find, read, inherit and override hardware profiles.

Search order (a later folder shadows an earlier one with the same profile name):
  1. the profiles shipped in the wheel (``profiles/*.yaml`` in the source tree),
  2. each folder in ``XINFER_PROFILES_PATH`` (separated by ``os.pathsep``),
  3. each ``--profiles-dir`` / ``profiles_dirs=`` given by the caller.
A profile's name is its file name without ``.yaml``; ``extends: parent`` inherits every field of the
parent (mappings merge key by key, lists and scalars are replaced).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..errors import ProfileError
from . import schema
from ._checker import collecting, report
from .schema import Profile

ENV_PATH = "XINFER_PROFILES_PATH"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def builtin_dir() -> Path:
    """The folder holding the profiles shipped with the package."""
    from importlib.resources import files

    return Path(str(files("xinfer_sdk.builtin_profiles")))


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"cannot read the file ({exc.strerror})", file=str(path)) from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProfileError(f"{where}not valid YAML ({problem})", file=str(path)) from None


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """'batch.max_batch_size=16' -> (['batch', 'max_batch_size'], 16); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
        raise ProfileError(f"expected FIELD.PATH=VALUE (e.g. batch.max_batch_size=16), got {text!r}", field="--set")
    try:
        parsed = yaml.load(value, Loader=_Loader) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ProfileError(f"{part!r} is not a section, cannot set {'.'.join(path)}", field="--set")
            node = child
        node[path[-1]] = value
    return out


class ProfileRegistry:
    """All profiles visible from the built-in folder, XINFER_PROFILES_PATH and extra folders."""

    def __init__(self, dirs: Sequence[str | os.PathLike[str]] = (), *, use_env: bool = True,
                 include_builtin: bool = True):
        folders: list[Path] = [builtin_dir()] if include_builtin else []
        if use_env:
            folders += [Path(p) for p in os.environ.get(ENV_PATH, "").split(os.pathsep) if p.strip()]
        folders += [Path(d) for d in dirs]
        for folder in folders[1 if include_builtin else 0:]:
            if not folder.is_dir():
                raise ProfileError("profiles folder does not exist", file=str(folder),
                                   hint=f"check --profiles-dir / {ENV_PATH}")
        self.folders = folders
        self.files: dict[str, Path] = {}
        for folder in folders:
            for path in sorted(folder.glob("*.y*ml")):
                if path.suffix in (".yaml", ".yml"):
                    self.files[path.stem] = path
        self._raw: dict[str, dict[str, Any]] = {}

    # -- reading ----------------------------------------------------------------------------------------
    def raw(self, name: str) -> dict[str, Any]:
        """The validated (not yet inherited) contents of one profile file."""
        if name not in self._raw:
            path = self.files.get(name)
            if path is None:
                raise ProfileError(f"unknown profile {name!r}; known: {', '.join(self.names()) or 'none'}",
                                   hint="see `xinfer-sdk profiles list`, or pass --profiles-dir")
            self._raw[name] = self._read(path)
        return self._raw[name]

    def _read(self, path: Path) -> dict[str, Any]:
        data = schema.validate(_read_yaml(path), str(path))
        if data["name"] != path.stem:
            report(ProfileError(f"name {data['name']!r} must equal the file name {path.stem!r}", file=str(path),
                                field="name"))
        return data

    def merged(self, name: str) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The profile with every ``extends`` parent folded in, and the chain of names (child first)."""
        chain: list[str] = []
        current: str | None = name
        layers: list[dict[str, Any]] = []
        while current is not None:
            if current in chain:
                loop = " -> ".join([*chain, current])
                raise ProfileError(f"cycle in extends: {loop}", file=str(self.files[name]), field="extends")
            if current not in self.files and chain:
                raise ProfileError(f"unknown parent profile {current!r}", file=str(self.files[chain[-1]]),
                                   field="extends", hint=f"known: {', '.join(self.names(include_abstract=True))}")
            data = self.raw(current)
            chain.append(current)
            layers.append(data)
            current = data.get("extends")
        merged: dict[str, Any] = {}
        for layer in reversed(layers):
            merged = deep_merge(merged, {k: v for k, v in layer.items() if k != "abstract"})
        merged["name"] = name
        merged["extends"] = layers[0].get("extends")
        merged["abstract"] = bool(layers[0].get("abstract", False))
        return merged, tuple(chain)

    def get(self, name: str, overrides: Iterable[str] = ()) -> Profile:
        merged, chain = self.merged(name)
        file = str(self.files[name])
        if merged.get("abstract"):
            raise ProfileError("is an abstract base profile (abstract: true); use a concrete one that extends it",
                               file=file)
        overrides = list(overrides)
        if overrides:
            merged = apply_overrides(merged, overrides)
            keys = {o.partition("=")[0].strip() for o in overrides}
            batch = merged.get("batch") or {}
            if "batch.max_batch_size" in keys and "batch.preferred_batch_sizes" not in keys and isinstance(
                    batch.get("max_batch_size"), int):
                # an inherited preferred list must not make a smaller --set max_batch_size invalid
                batch["preferred_batch_sizes"] = [b for b in batch.get("preferred_batch_sizes") or []
                                                  if isinstance(b, int) and b <= batch["max_batch_size"]]
            label = f"{file} (with --set {' '.join(overrides)})"
            merged = schema.PROFILE.check(merged, "", label)
            schema.check_complete(merged, label)  # name the overrides when they break a cross-field rule
        return schema.build(merged, file=file, chain=chain)

    def names(self, *, include_abstract: bool = False) -> list[str]:
        names = []
        for name in sorted(self.files):
            if include_abstract or not name.startswith("_"):
                names.append(name)
        return names

    def load_all(self) -> tuple[list[Profile], list[ProfileError]]:
        """Every concrete profile, plus the errors of the files that are broken (for list/validate)."""
        good, bad = [], []
        for name in self.names():
            try:
                good.append(self.get(name))
            except ProfileError as exc:
                bad.append(exc)
        return good, bad

    def validate_file(self, path: str | os.PathLike[str]) -> Profile:
        """Validate one file on its own (its parents come from this registry)."""
        p = Path(path)
        if not p.is_file():
            raise ProfileError("no such file", file=str(p))
        data = self._read(p)
        self.files[p.stem] = p
        self._raw[p.stem] = data
        return self.get(p.stem)

    def problems(self, path: str | os.PathLike[str]) -> tuple[Profile | None, list[ProfileError]]:
        """Every problem of one file, not only the first (``profiles validate``): the profile when there is none.
        Field checks all run; the rules on the merged profile run once the fields are valid."""
        profile = None
        with collecting() as found:
            profile = self.validate_file(path)
        return (None if found else profile), found


def load_profile(name_or_path: str | Profile, *, profiles_dirs: Sequence[str | os.PathLike[str]] = (),
                 overrides: Iterable[str] = ()) -> Profile:
    """A profile by name (``t4``) or by YAML path, with optional ``FIELD=VALUE`` overrides."""
    if isinstance(name_or_path, Profile):
        if overrides:
            return load_profile(name_or_path.name, profiles_dirs=profiles_dirs, overrides=overrides)
        return name_or_path
    registry = ProfileRegistry(profiles_dirs)
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        p = Path(text)
        registry.validate_file(p)
        return registry.get(p.stem, overrides)
    return registry.get(text, overrides)
