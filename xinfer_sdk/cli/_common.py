"""Shared CLI plumbing: --json output, rich tables on stdout, diagnostics on stderr."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

# Not a terminal (CI logs, pipes): rich would wrap tables at 80 columns; give them room instead.
_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "200"))
out = Console(soft_wrap=True, highlight=False, width=_WIDTH)
err = Console(stderr=True, soft_wrap=True, highlight=False, width=_WIDTH)

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout (for CI).")
set_option = click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
                          help="Override one profile field, e.g. --set batch.max_batch_size=16 (repeatable).")


def _default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=_default))


def emit_event(data: Any) -> None:
    """One event as one line of JSON on stdout, flushed at once (``serve --json``: a supervisor reads it live)."""
    click.echo(json.dumps(data, default=_default, separators=(",", ":")))
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, whole: Sequence[str] = (),
          **kw: Any) -> Table:
    """A rich table; the columns named in ``whole`` are never wrapped or cut (names a user types back in), the
    others give way on a narrow terminal."""
    t = Table(title=title, title_justify="left", **kw)
    for i, c in enumerate(columns):
        if c in whole:
            width = max([len(c)] + [len(str(r[i])) for r in rows])
            t.add_column(c, no_wrap=True, min_width=width)
        else:
            t.add_column(c)
    for r in rows:
        t.add_row(*["-" if v is None else str(v) for v in r])
    return t


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:g}"
    return f"{value}{unit}"


def obj(ctx: click.Context) -> dict[str, Any]:
    return ctx.ensure_object(dict)


def registry(ctx: click.Context):
    from ..profiles import ProfileRegistry

    state = obj(ctx)
    if "registry" not in state:
        state["registry"] = ProfileRegistry(state.get("profiles_dirs", ()))
    return state["registry"]


def progress(enabled: bool = True) -> Callable[..., Any] | None:
    """A progress callback (done, total, label) drawing a rich bar on stderr, or None when quiet."""
    if not enabled or not sys.stderr.isatty():
        return None
    from rich.progress import Progress

    state: dict[str, Any] = {}

    def cb(done: int, total: int, label: str = "") -> None:
        if "p" not in state:
            state["p"] = Progress(console=err, transient=True)
            state["p"].start()
            state["t"] = state["p"].add_task(label or "working", total=total)
        state["p"].update(state["t"], completed=done, total=total, description=label or "working")
        if done >= total:
            state["p"].stop()
            state.clear()

    return cb
