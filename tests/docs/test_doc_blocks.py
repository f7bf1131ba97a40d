"""Issue 18.2: the docs are tests. Every shell and Python block of README.md and docs/*.md runs, in order, against
the digits model the docs build, or is marked `<!-- not-runnable: REASON -->` (GPU, a cluster, Docker, ...).
How a block runs: tests/docs/blocks.py."""

from __future__ import annotations

import re

import pytest

from .blocks import COMMAND, PAGES, RUNNABLE, blocks, run_page

PAGES_RUN = PAGES


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_RUN, ids=lambda p: p.name)
def test_every_runnable_block_of_the_page_runs_in_order(page, demo_out, tmp_path):
    run_page(page, tmp_path / "clone", demo_out)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_a_marked_block_says_why_and_is_a_block_that_would_run(page):
    for b in blocks(page):
        if b.not_runnable is not None:
            assert len(b.not_runnable) >= 3, f"{page.name}:{b.line}: say why the block cannot run here"
            assert b.language in RUNNABLE or b.writes, \
                f"{page.name}:{b.line}: a ```{b.language or '(untagged)'} block is never run; drop its marker"


def _synopsis(line: str) -> bool:
    """`xinfer-sdk serve BUNDLE [--port 8000]`: a usage line with placeholders or optional parts, not a command."""
    return "[--" in line or re.search(r"\b[A-Z][A-Z_]{2,}\b", line.split("#")[0]) is not None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_command_hides_in_an_untagged_block(page):
    hidden = [f"{page.name}:{b.line}: {b.source.splitlines()[0]}" for b in blocks(page)
              if b.language in ("", "text", "console") and b.source.strip() and COMMAND.match(b.source.lstrip())
              and not b.source.lstrip().startswith("$ ") and not _synopsis(b.source.lstrip().splitlines()[0])]
    assert not hidden, "commands in untagged blocks (tag them ```bash, or mark them not-runnable):\n" + "\n".join(hidden)
