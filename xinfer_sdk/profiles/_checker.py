"""A tiny declarative checker for profile YAML: each spec checks a value at a field path.

Every failure is a ``ProfileError`` naming the file, the field path (``batch.max_batch_size``) and what
was expected, in one line.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import ProfileError

# ``profiles validate`` lists every problem of a file: while ``collecting()``, a failed field is recorded and the
# check goes on; otherwise (loading a profile to use it) the first problem raises, as before.
_FOUND: contextvars.ContextVar[list[ProfileError] | None] = contextvars.ContextVar("profile_problems", default=None)


class Incomplete(ProfileError):
    """Raised while collecting when the rules that follow need the fields already found broken (not recorded)."""

    def __init__(self) -> None:
        super().__init__("the checks stopped at the problems above")


@contextlib.contextmanager
def collecting() -> Iterator[list[ProfileError]]:
    """Record problems instead of raising the first; yields the list (in the order found)."""
    found: list[ProfileError] = []
    token = _FOUND.set(found)
    try:
        yield found
    except Incomplete:
        pass
    except ProfileError as exc:  # a problem after which nothing more can be checked
        found.append(exc)
    finally:
        _FOUND.reset(token)


def report(exc: ProfileError) -> None:
    """Raise ``exc``, or record it while collecting."""
    found = _FOUND.get()
    if found is None:
        raise exc
    found.append(exc)


def checkpoint() -> None:
    """While collecting: stop here when problems were found (what follows relies on the fields being valid)."""
    if _FOUND.get():
        raise Incomplete()


class Spec:
    required = False
    nullable = False

    def check(self, value: Any, path: str, file: str) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def fail(self, value: Any, path: str, file: str, expected: str) -> ProfileError:
        return ProfileError(f"expected {expected}, got {value!r}", file=file, field=path)


UNKNOWN = "unknown"  # a figure the vendor has not published (kept as this string until Profile exposes None)


class Scalar(Spec):
    def __init__(self, typ: type | tuple[type, ...], *, required=False, nullable=False, choices=None, minimum=None,
                 maximum=None, what=None, unknown_ok=False):
        self.typ, self.required, self.nullable = typ, required, nullable
        self.choices, self.minimum, self.maximum, self.what = choices, minimum, maximum, what
        self.unknown_ok = unknown_ok

    def check(self, value, path, file):
        if value is None:
            if self.nullable:
                return None
            raise self.fail(value, path, file, self.describe() + " (null is not allowed here)")
        if self.unknown_ok and value == UNKNOWN:
            return UNKNOWN
        typ = self.typ
        ok = isinstance(value, typ) and not (isinstance(value, bool) and bool not in _tuple(typ))
        if not ok and float in _tuple(typ) and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise self.fail(value, path, file, self.describe())
        if self.choices is not None and value not in self.choices:
            raise self.fail(value, path, file, f"one of {list(self.choices)}")
        if self.minimum is not None and value < self.minimum:
            raise self.fail(value, path, file, f"{self.describe()} >= {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise self.fail(value, path, file, f"{self.describe()} <= {self.maximum}")
        return value

    def describe(self):
        if self.what:
            return self.what + (f" or '{UNKNOWN}'" if self.unknown_ok else "")
        names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
        text = " or ".join(names.get(t, t.__name__) for t in _tuple(self.typ))
        return text + (f" or '{UNKNOWN}'" if self.unknown_ok else "")


class Date(Spec):
    """A calendar date: YAML's unquoted 2026-07-20 (a datetime.date) or the same as a string; kept as ISO text."""

    def __init__(self, *, required=False):
        self.required = required

    def check(self, value, path, file):
        import datetime

        if isinstance(value, datetime.date):
            return value.isoformat()[:10]
        if isinstance(value, str):
            try:
                return datetime.date.fromisoformat(value.strip()).isoformat()
            except ValueError:
                pass
        raise self.fail(value, path, file, self.describe())

    def describe(self):
        return "a date like 2026-07-20"


class ListOf(Spec):
    def __init__(self, item: Spec, *, required=False, nullable=False, min_len=0, unique=False):
        self.item, self.required, self.nullable, self.min_len, self.unique = item, required, nullable, min_len, unique

    def check(self, value, path, file):
        if value is None and self.nullable:
            return None
        if not isinstance(value, list):
            raise self.fail(value, path, file, f"a list of {self.item.describe()}")
        out, failed = [], False
        for i, v in enumerate(value):
            try:
                out.append(self.item.check(v, f"{path}[{i}]", file))
            except Incomplete:
                raise
            except ProfileError as exc:
                report(exc)
                failed = True
        if failed:
            return out
        if len(out) < self.min_len:
            raise self.fail(value, path, file, f"at least {self.min_len} item(s)")
        if self.unique and len(set(map(repr, out))) != len(out):
            raise self.fail(value, path, file, "a list without duplicates")
        return out

    def describe(self):
        return f"a list of {self.item.describe()}"


class Section(Spec):
    def __init__(self, fields: dict[str, Spec], *, required=False, nullable=False, open_keys: Spec | None = None):
        self.fields, self.required, self.nullable, self.open_keys = fields, required, nullable, open_keys

    def check(self, value, path, file):
        if value is None and self.nullable:
            return None
        if not isinstance(value, Mapping):
            raise self.fail(value, path, file, "a mapping")
        out = {}
        for key, val in value.items():
            sub = f"{path}.{key}" if path else str(key)
            spec = self.fields.get(key)
            if spec is None and self.open_keys is not None:
                spec = self.open_keys
            if spec is None:
                report(ProfileError(f"unknown field; expected one of {sorted(self.fields)}", file=file, field=sub))
                continue
            try:
                out[key] = spec.check(val, sub, file)
            except Incomplete:
                raise
            except ProfileError as exc:
                report(exc)
        for key, spec in self.fields.items():
            if spec.required and key not in value:
                sub = f"{path}.{key}" if path else key
                report(ProfileError(f"missing required field ({spec.describe()})", file=file, field=sub))
        return out

    def describe(self):
        return "a mapping"


def _tuple(t):
    return t if isinstance(t, tuple) else (t,)
