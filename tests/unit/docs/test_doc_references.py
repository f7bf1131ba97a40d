"""The docs refer only to what a user of the repository has: no internal design notes, no "seed", no kits or
reference folders that live outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OUTSIDE = re.compile(r"DESIGN\.md|\bthe seed\b|\bseed's\b|anchor kit|shared/reference|\.\./shared/", re.IGNORECASE)
# docs/planning.md's device-model section is maintained elsewhere (issue 18, part B)
SKIP = {"planning.md": ("### 2. How long a batch takes", "### 3.")}


def _text(path: Path) -> str:
    text = path.read_text()
    if path.name in SKIP:
        start, end = SKIP[path.name]
        i = text.find(start)
        j = text.find(end, i + 1)
        if i >= 0 and j > i:
            text = text[:i] + text[j:]
    return text


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_docs_refer_only_to_what_a_user_has(path):
    hits = [f"{path.name}:{n}: {line.strip()}" for n, line in enumerate(_text(path).splitlines(), 1)
            if OUTSIDE.search(line)]
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_repository_paths_named_in_the_docs_exist(path):
    missing = []
    for ref in re.findall(r"`((?:profiles|deploy|bench|examples|tests|xinfer_sdk|converters)/[\w./*-]+)`", _text(path)):
        if "*" in ref:
            if not list(ROOT.glob(ref)):
                missing.append(ref)
        elif not any((ROOT / c).exists() for c in (ref, ref.rsplit(".", 1)[0] + ".py",  # module.function
                                                    ref.replace("xinfer_sdk/builtin_profiles", "profiles"))):  # the wheel's name
            missing.append(ref)
    assert not missing, f"{path.name} names {missing}, which the repository does not have"
