"""README "Install (as a user)": honest install lines and an extras table that matches pyproject.toml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _extras() -> dict[str, list[str]]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _table(section: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (cells[1], cells[2])
    return rows


def _dist(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_install_gives_a_line_that_works_from_a_clone_today():
    section = _section((ROOT / "README.md").read_text(), "Install (as a user)")
    commands = [ln.split("#")[0].strip() for ln in section.splitlines() if ln.startswith("pip install")]
    assert "pip install -e '.[cpu,cli]'" in commands  # inside the checkout
    assert any(re.fullmatch(r"pip install '\./[\w.-]+\[cpu,cli\]'", c) for c in commands)  # from beside the clone
    assert "not published" in section or "No release is published" in section


def test_extras_table_matches_pyproject():
    extras = _extras()
    rows = _table(_section((ROOT / "README.md").read_text(), "Install (as a user)"))
    assert set(rows) == set(extras), "every extra in pyproject.toml has a row, and no row names a missing one"
    for extra, (installs, _) in rows.items():
        dists = {_dist(r) for r in extras[extra]}
        named = {w.lower().replace("_", "-") for w in re.findall(r"[A-Za-z][\w.-]*", installs.split("(")[0])}
        assert named <= dists, f"[{extra}] names {sorted(named - dists)}, which pyproject.toml does not install"


def test_plan_is_listed_under_the_extra_that_brings_onnx():
    rows = _table(_section((ROOT / "README.md").read_text(), "Install (as a user)"))
    assert "onnx" in {_dist(r) for r in _extras()["build"]}
    assert "`plan`" in rows["build"][1]
