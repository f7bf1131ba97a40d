"""The docs' code blocks as Sybil examples: every fenced block of README.md and docs/*.md, with how it runs.

Sybil lexes the fences (its `RawFencedCodeBlockLexer`); this module decides what each block is:

- ```python            run in the page's namespace (top-level `await` allowed, as in `python -m asyncio`)
- ```bash / sh / shell run with bash -e -o pipefail in the page's folder; a line `xinfer-sdk serve ...` starts that
                       server in the background (as "in a second shell" does), waits until it is ready, and the
                       page's later blocks talk to it; the next `serve` line or the page's end stops it (SIGTERM,
                       exit 0 expected)
- ```yaml whose first line is `# PATH` (or `# PATH (...)`): written to PATH, so a later command can use it
- anything else        text, output, data: not run

A block preceded by `<!-- not-runnable: REASON -->` is not run; REASON says why (GPU, a cluster, Docker, ...).

Each page runs in its own folder that looks like a clone: the repository's top-level entries linked in, and `out/demo`
a copy of what `make demo` builds (built once per session). HOME is the page's folder (`~/...` paths stay inside),
and the page's ports 8000/8001/8002 are mapped to free ones so a run cannot collide with another server.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from live import free_ports
from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown.lexers import RawFencedCodeBlockLexer

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = {"bash", "sh", "shell"}
RUNNABLE = SHELLS | {"python"}
MARKER = re.compile(r"<!--\s*not-runnable:\s*(?P<reason>.+?)\s*-->\s*$")
SERVE = re.compile(r"^(?:\w+=\S+\s+)*xinfer-sdk\s+serve\b")
PATH_COMMENT = re.compile(r"^#\s*(?P<path>[~\w./-]+\.ya?ml)\b")
# an untagged block that starts with one of these is a command in disguise: tag it or mark it
COMMAND = re.compile(r"^(?:\$ )?(?:xinfer-sdk|python3?|pip|curl|kubectl|helm|docker|make|bench/)\b")


@dataclass
class Block:
    language: str
    source: str
    line: int
    not_runnable: str | None  # the marker's reason

    @property
    def runs(self) -> bool:
        return self.not_runnable is None and (self.language in RUNNABLE or self.writes is not None)

    @property
    def writes(self) -> str | None:
        """The file a ```yaml block names in its first line, or None."""
        if self.language not in ("yaml", "yml"):
            return None
        first = self.source.lstrip().splitlines()[0] if self.source.strip() else ""
        m = PATH_COMMENT.match(first)
        return m.group("path") if m and not first[m.end():].strip().startswith("in ") else None


def _marker_before(text: str, start: int) -> str | None:
    for line in reversed(text[:start].splitlines()[-3:]):
        if line.strip():
            m = MARKER.search(line)
            return m.group("reason") if m else None
    return None


class BlockParser:
    """Every fenced block, as a Block; evaluated by the page's Session."""

    lexer = RawFencedCodeBlockLexer(info_pattern=re.compile(r"(?P<language>[^\n]*)$\n", re.MULTILINE))

    def __call__(self, document: Document):
        for region in self.lexer(document):
            src = region.lexemes["source"]
            region.parsed = Block(region.lexemes["language"].strip().split(" ")[0], str(src),
                                  document.text.count("\n", 0, region.start) + 1,
                                  _marker_before(document.text, region.start))
            region.evaluator = _evaluate
            yield region


SYBIL = Sybil(parsers=[BlockParser()])


def blocks(page: Path) -> list[Block]:
    return [ex.parsed for ex in SYBIL.parse(page)]


def examples(page: Path) -> list[Example]:
    return list(SYBIL.parse(page))


def _evaluate(example: Example) -> None:
    block: Block = example.parsed
    session: Session = example.namespace["__session__"]
    if block.runs:
        session.run(block)


def logical_lines(source: str) -> list[str]:
    out, cur = [], ""
    for line in source.splitlines():
        cur += line
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        out.append(cur)
        cur = ""
    if cur:
        out.append(cur)
    return out


@dataclass
class Session:
    """One page's run: its folder, namespace, ports and background server."""

    folder: Path
    demo: Path
    namespace: dict = field(default_factory=dict)
    server: subprocess.Popen | None = None
    server_log: Path | None = None
    ports: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for entry in ROOT.iterdir():
            if entry.name not in {"out", ".git", ".venv"} and not entry.name.startswith("."):
                (self.folder / entry.name).symlink_to(entry)
        shutil.copytree(self.demo, self.folder / "out" / "demo", symlinks=True)
        self.ports = dict(zip(("8000", "8001", "8002"), map(str, free_ports(3))))
        self.env = dict(os.environ, HOME=str(self.folder), PYTHONPATH="",
                        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
        self.namespace["__name__"] = "__main__"

    def localize(self, text: str) -> str:
        return re.sub(r"\b(8000|8001|8002)\b", lambda m: self.ports[m.group(1)], text)

    # -- running blocks
    def run(self, block: Block) -> None:
        if block.writes:
            path = Path(block.writes.replace("~", str(self.folder), 1))
            path = path if path.is_absolute() else self.folder / path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.source)
        elif block.language == "python":
            self._python(block)
        else:
            self._shell(block)

    def _python(self, block: Block) -> None:
        code = compile(self.localize(block.source), f"<block at line {block.line}>", "exec",
                       flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        cwd = os.getcwd()
        os.chdir(self.folder)
        try:
            result = eval(code, self.namespace)  # noqa: S307 - the docs' own examples
            if asyncio.iscoroutine(result):
                asyncio.run(result)
        finally:
            os.chdir(cwd)

    def _shell(self, block: Block) -> None:
        pending: list[str] = []
        for line in logical_lines(self.localize(block.source)):
            if SERVE.match(line.strip()):
                self._bash("\n".join(pending), block)
                pending = []
                self.start_server(line.strip(), block)
            else:
                pending.append(line)
        self._bash("\n".join(pending), block)

    def _bash(self, script: str, block: Block) -> None:
        if not script.strip():
            return
        r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=self.folder, env=self.env,
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise AssertionError(f"block at line {block.line} exited {r.returncode}:\n{script}\n--- stdout\n"
                                 f"{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}")

    def start_server(self, line: str, block: Block) -> None:
        self.stop_server()
        line = re.sub(r"\s+#.*$", "", line)  # the doc's trailing comment
        port = re.search(r"--port[ =](\d+)", line)
        if port is None:  # the docs' default ports, mapped
            line += f" --port {self.ports['8000']} --grpc-port {self.ports['8001']}"
        url = f"http://127.0.0.1:{port.group(1) if port else self.ports['8000']}/v2/health/ready"
        self.server_log = self.folder / f"serve-{block.line}.log"
        with open(self.server_log, "w") as log:
            self.server = subprocess.Popen(["bash", "-c", "exec env " + line], cwd=self.folder, env=self.env,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise AssertionError(f"block at line {block.line}: `{line}` exited {self.server.returncode}:\n"
                                     f"{self.server_log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"block at line {block.line}: `{line}` was not ready within 60 s")

    def stop_server(self) -> None:
        proc, self.server = self.server, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError("the docs' server did not exit within 60 s of SIGTERM") from None
        assert code == 0, f"the docs' server exited {code} on SIGTERM:\n{self.server_log.read_text()[-3000:]}"

    def close(self) -> None:
        self.stop_server()


def run_page(page: Path, folder: Path, demo: Path) -> int:
    """Run every block of one page in order; returns how many ran."""
    session = Session(folder, demo)
    document = SYBIL.parse(page)
    document.namespace["__session__"] = session
    ran = 0
    try:
        for example in document:
            t0 = time.monotonic()
            example.evaluate()
            if example.parsed.runs:
                ran += 1
                print(f"{page.name}:{example.parsed.line}: {time.monotonic() - t0:.1f} s")
    finally:
        session.close()
    return ran


__all__ = ["Block", "Region", "blocks", "examples", "run_page", "PAGES", "COMMAND", "RUNNABLE", "SHELLS"]
