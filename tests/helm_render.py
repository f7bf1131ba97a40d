"""Render the Go-template subset that `xinfer-sdk deploy k8s` writes into its Helm chart (tests only).

There is no helm binary on the test machines, so the suite renders the chart itself and compares the result
with the plain manifests. Supported, with Helm's semantics: ``{{ .Values.a.b }}``, ``| quote``,
``toYaml X | nindent N``, ``add (int X) (int Y) N``, ``toYaml X | sha256sum``, ``{{- if [not] X }}`` / ``{{- end }}`` and the ``{{-`` /
``-}}`` whitespace trimming. Anything else raises, so a template the generator starts writing in a new form
fails here instead of being skipped.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import yaml

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _lookup(values: dict[str, Any], expr: str) -> Any:
    if not expr.startswith(".Values."):
        raise ValueError(f"unsupported reference {expr!r}")
    node: Any = values
    for part in expr[len(".Values."):].split("."):
        node = node[part] if isinstance(node, dict) and part in node else None
    return node


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<no value>"
    return str(value)


def _pipeline(values: dict[str, Any], text: str) -> str:
    stages = [s.strip() for s in text.split("|")]
    head = stages[0].split()
    if head[0] == "add":  # add (int .Values.a) (int .Values.b) 5
        total = 0
        for term in re.findall(r"\(int (\S+)\)|(-?\d+)", stages[0][3:]):
            total += int(float(_lookup(values, term[0]))) if term[0] else int(term[1])
        return str(total)
    if head[0] == "toYaml":
        cur: Any = _to_yaml(_lookup(values, head[1]))
    elif len(head) == 1:
        cur = _lookup(values, head[0])
    else:
        raise ValueError(f"unsupported action {text!r}")
    for st in stages[1:]:
        fn, *args = st.split()
        if fn == "quote":
            cur = json.dumps(_scalar(cur))
        elif fn == "nindent":
            pad = " " * int(args[0])
            cur = "\n" + "\n".join(pad + line for line in str(cur).split("\n"))
        elif fn == "sha256sum":
            cur = hashlib.sha256(str(cur).encode()).hexdigest()
        else:
            raise ValueError(f"unsupported function {fn!r}")
    return _scalar(cur) if not isinstance(cur, str) else cur


def render(template: str, values: dict[str, Any]) -> str:
    out: list[str] = []
    stack: list[bool] = []  # emitting?
    pos = 0
    pending_rtrim = False
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if pending_rtrim:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        if all(stack):
            out.append(text)
        pos, pending_rtrim = m.end(), bool(m.group(3))
        action = m.group(2)
        if action.startswith("if "):
            cond = action[3:].strip()
            neg = cond.startswith("not ")
            val = _lookup(values, cond[4:].strip() if neg else cond)
            stack.append(bool(val) != neg)
        elif action == "end":
            stack.pop()
        elif all(stack):
            out.append(_pipeline(values, action))
    tail = template[pos:]
    out.append(tail.lstrip() if pending_rtrim else tail)
    if stack:
        raise ValueError("unclosed {{ if }}")
    return "".join(out)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's values merge for ``--set`` / ``-f``: mappings merge, everything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
