"""The graph-analysis and planning packages import in one direction: no module circle (counting every import,
also those inside functions and under TYPE_CHECKING), and each module imports on its own in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3] / "xinfer_sdk"
PACKAGES = ("graph", "planning")
EXPECTED_CYCLES: dict[str, set[frozenset[str]]] = {"graph": set(), "planning": set()}


def modules(package: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / package).glob("*.py"))


def edges(package: str) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports (``from .x import``, ``from . import x``,
    ``from ..package.x import``, ``import xinfer_sdk.package.x``), wherever the import statement sits."""
    names = set(modules(package))
    out: dict[str, set[str]] = {}
    for mod in names:
        tree = ast.parse((ROOT / package / f"{mod}.py").read_text())
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                parts = (node.module or "").split(".") if node.module else []
                if node.level == 1:
                    target = parts[:1]
                elif node.level == 2 and parts[:1] == [package]:
                    target = parts[1:2]
                elif node.level == 0 and parts[:2] == ["xinfer_sdk", package]:
                    target = parts[2:3]
                else:
                    continue
                if target:
                    deps.add(target[0])
                else:  # from . import a, b
                    deps.update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    parts = a.name.split(".")
                    if parts[:2] == ["xinfer_sdk", package] and len(parts) > 2:
                        deps.add(parts[2])
        out[mod] = {d for d in deps & names if d != mod}
    return out


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.add(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}
    assert cycles({"a": {"b"}, "b": set()}) == set()


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_form_no_circle(package):
    found = cycles(edges(package))
    unexpected = found - EXPECTED_CYCLES[package]
    assert not unexpected, f"import circles in xinfer_sdk.{package}: {[sorted(c) for c in unexpected]}"


def test_graph_modules_import_only_from_the_left():
    g = edges("graph")
    assert g["opcost"] == set() and g["result"] == set()
    assert "cost" not in g["walk"] and "walk" in g["cost"]


@pytest.mark.parametrize("module", [f"{p}.{m}" for p in PACKAGES for m in modules(p)])
def test_each_module_imports_alone(module):
    r = subprocess.run([sys.executable, "-c", f"import xinfer_sdk.{module}"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
