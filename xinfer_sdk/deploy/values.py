"""One source for two outputs: plain manifests and a Helm chart that cannot drift apart.

The manifest builders (``manifests.py``) put a ``Ref`` wherever a user may want to change a value
(image, replicas, resources, the server's config, ...). A ``Ref`` carries its ``values.yaml`` path and its
value, so:

- ``resolve(obj)`` gives the plain manifest (every Ref replaced by its value; keys whose condition is false
  dropped);
- ``Values.tree`` is the chart's ``values.yaml``, collected from the same Refs;
- ``helm_template(obj)`` dumps the same object with each Ref turned into the Go-template expression that
  reads it back (``{{ .Values.replicas }}``, ``{{- toYaml .Values.resources | nindent 12 }}``).

Rendering the chart with its own ``values.yaml`` therefore yields the plain manifests: the test suite renders
it and compares, object by object.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import re
from collections.abc import Mapping
from typing import Any

import yaml

SCALAR, BLOCK, TEXT, HASH, SUM = "scalar", "block", "text", "hash", "sum"


@dataclasses.dataclass(frozen=True)
class Ref:
    """A value read from ``values.yaml`` at ``path`` (dotted). ``when``: the key holding this Ref exists only
    while that boolean value is true (``!path``: while it is false)."""

    path: str
    value: Any
    kind: str = SCALAR      # scalar | block (a mapping or list) | text (YAML text of a mapping) | hash | sum
    when: str | None = None

    def __str__(self) -> str:  # a Ref formatted into a longer string could not be read back from values.yaml
        raise TypeError(f"values reference {self.path!r} must be a whole YAML value, not part of a string")

    def __format__(self, spec: str) -> str:
        return self.__str__()


class Values:
    """Registers Refs and builds the values tree (the chart's values.yaml) from them."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}
        self.kinds: dict[str, str] = {}  # path -> scalar | block | text | flag

    def schema(self) -> dict[str, Any]:
        """A JSON schema of values.yaml (Helm checks ``--set`` / ``-f`` values against values.schema.json):
        types of the knobs; mappings and lists (resources, tolerations, serverConfig) are not constrained inside,
        and a quantity-like string ('8', '10') also takes a number, as ``--set x=8`` gives one."""
        root: dict[str, Any] = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                                "properties": {}}
        for path, kind in self.kinds.items():
            node = root
            *parents, leaf = path.split(".")
            for p in parents:
                node = node["properties"].setdefault(p, {"type": "object", "properties": {}})
            value = self.get(path)
            node["properties"][leaf] = _json_type(value, kind)
        return root

    def _set(self, path: str, value: Any) -> None:
        node = self.tree
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        if leaf in node and node[leaf] != value:
            raise ValueError(f"values path {path!r} registered twice with different values")
        node[leaf] = copy.deepcopy(value)

    def get(self, path: str) -> Any:
        node: Any = self.tree
        for p in path.split("."):
            node = node[p]
        return node

    def ref(self, path: str, value: Any, *, when: str | None = None) -> Ref:
        self._set(path, value)
        kind = BLOCK if isinstance(value, (Mapping, list, tuple)) else SCALAR
        self.kinds[path] = kind
        return Ref(path, list(value) if isinstance(value, tuple) else value, kind, when)

    def flag(self, path: str, value: bool) -> bool:
        self._set(path, bool(value))
        self.kinds[path] = "flag"
        return bool(value)

    def text(self, path: str, value: Mapping[str, Any]) -> Ref:
        """A mapping stored in values.yaml and written into the manifest as YAML text (a ConfigMap file)."""
        self._set(path, value)
        self.kinds[path] = TEXT
        return Ref(path, dict(value), TEXT)

    def hash_of(self, path: str) -> Ref:
        """A checksum of the values at ``path`` (a pod annotation: a changed config rolls the pods)."""
        return Ref(path, self.get(path), HASH)

    def sum_of(self, paths: tuple[str, ...], const: int) -> Ref:
        """An integer computed from other values (grace period = preStop + drain + margin): Helm's ``add``."""
        for p in paths:
            self.get(p)  # must be registered already
        return Ref(",".join(paths), const, SUM)

    def holds(self, cond: str | None) -> bool:
        if cond is None:
            return True
        neg = cond.startswith("!")
        return bool(self.get(cond.lstrip("!"))) != neg


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (a ConfigMap's config.yaml) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data and not data.startswith((" ", "\n")) and all(
        line == line.rstrip() for line in data.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def yaml_text(value: Any) -> str:
    return yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100_000)


def config_hash(value: Any) -> str:
    return hashlib.sha256(yaml.safe_dump(value, sort_keys=True).encode()).hexdigest()


def resolve(obj: Any, values: Values) -> Any:
    """The plain manifest: Refs replaced by their values (read from ``values``, as Helm would), conditional
    keys kept or dropped."""
    if isinstance(obj, Ref) and obj.kind == SUM:
        return sum(int(float(values.get(p))) for p in obj.path.split(",")) + int(obj.value)
    if isinstance(obj, Ref):
        value = values.get(obj.path)
        if obj.kind == TEXT:
            return yaml_text(value)
        if obj.kind == HASH:
            return config_hash(value)
        if obj.kind == SCALAR and isinstance(obj.value, str) and not isinstance(value, str):
            return _quoted(value)  # the chart writes `| quote`: a number from --set still lands as a string
        return copy.deepcopy(value)
    if isinstance(obj, Mapping):
        return {k: resolve(v, values) for k, v in obj.items()
                if not (isinstance(v, Ref) and not values.holds(v.when))}
    if isinstance(obj, (list, tuple)):
        return [resolve(v, values) for v in obj]
    return obj


def _quoted(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ----------------------------------------------------------------------------------------------------------
# Helm
_TOKEN = re.compile(r"__XREF(\d+)__")
_LINE = re.compile(r"^(?P<indent> *)(?P<dash>- )?(?P<key>[^\s'\"][^:]*: )?(?P<q>['\"]?)__XREF(?P<n>\d+)__(?P=q)$")


def _expr(path: str) -> str:
    return ".Values." + path


def helm_template(obj: Any, *, when: str | None = None) -> str:
    """The Go template of one manifest: dump with placeholder tokens, then rewrite each token's line."""
    refs: list[Ref] = []

    def tokenize(o: Any) -> Any:
        if isinstance(o, Ref):
            refs.append(o)
            return f"__XREF{len(refs) - 1}__"
        if isinstance(o, Mapping):
            return {k: tokenize(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [tokenize(v) for v in o]
        return o

    lines: list[str] = []
    for line in yaml_text(tokenize(obj)).splitlines():
        m = _LINE.match(line)
        if not m:
            if _TOKEN.search(line):
                raise ValueError(f"a values reference must be a whole YAML value, not part of one: {line!r}")
            lines.append(line)
            continue
        ref = refs[int(m.group("n"))]
        head = m.group("indent") + (m.group("dash") or "") + (m.group("key") or "")
        col = len(m.group("indent")) + (2 if m.group("dash") else 0)  # column of the key (or list item)
        e = _expr(ref.path)
        if ref.kind == BLOCK:
            if not m.group("key"):
                raise ValueError(f"a block value needs a key: {line!r}")
            out = f"{head.rstrip()}\n{{{{- toYaml {e} | nindent {col + 2} }}}}"
        elif ref.kind == TEXT:
            out = f"{head}|\n{{{{- toYaml {e} | nindent {col + 2} }}}}"
        elif ref.kind == SUM:
            terms = " ".join(f"(int {_expr(p)})" for p in ref.path.split(","))
            out = f"{head}{{{{ add {terms} {int(ref.value)} }}}}"
        elif ref.kind == HASH:
            out = f"{head}{{{{ toYaml {e} | sha256sum | quote }}}}"
        elif isinstance(ref.value, str):
            out = f"{head}{{{{ {e} | quote }}}}"
        else:
            out = f"{head}{{{{ {e} }}}}"
        if ref.when is not None:
            cond = ref.when.lstrip("!")
            test = f"not {_expr(cond)}" if ref.when.startswith("!") else _expr(cond)
            out = f"{{{{- if {test} }}}}\n{out}\n{{{{- end }}}}"
        lines.append(out)
    text = "\n".join(lines) + "\n"
    if when is not None:
        text = f"{{{{- if {_expr(when)} }}}}\n{text}{{{{- end }}}}\n"
    return text


def _json_type(value: Any, kind: str) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": ["string", "number"]} if re.fullmatch(r"[0-9.]+m?", value) else {"type": "string"}
    if isinstance(value, (list, tuple)):
        return {"type": "array"}
    return {"type": "object"}
