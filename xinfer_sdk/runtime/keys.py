"""Unknown keys are errors that name the key and the nearest known one (config files, ``options=``)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import UserError

#: ``options=`` keys of xs.load / InferenceServer / a config.yaml's ``options:``, by backend (documented in
#: docs/tensorrt.md and docs/amd.md); the backends read them from ``Backend.options``
BACKEND_OPTIONS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("tf32", "cache_dir", "spinning"),
    "migraphx": ("tf32", "cache_dir", "spinning", "fp16", "exhaustive_tune"),
    "tensorrt": (),
    "torch": (),
}


def did_you_mean(key: Any, known: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest known key, or ''."""
    close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_key(where: str, key: Any, known: Iterable[str]) -> UserError:
    """The one-line error for an unknown ``key`` at ``where`` (e.g. 'config.yaml: server')."""
    known = sorted(known)
    return UserError(f"{where}.{key}: unknown key{did_you_mean(key, known)} (expected one of {', '.join(known)})")


def check_keys(data: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    known = set(known)
    for key in data:
        if key not in known:
            raise unknown_key(where, key, known)


def check_options(options: Mapping[str, Any] | None, backend: str = "auto") -> None:
    """Refuse ``options=`` keys no backend (or not the requested one) reads."""
    if not options:
        return
    if not isinstance(options, Mapping):
        raise UserError(f"options= expects a dict of backend options, got {type(options).__name__}")
    if backend in BACKEND_OPTIONS:
        known = set(BACKEND_OPTIONS[backend])
        where = f"options (backend {backend})"
    else:
        known = {k for keys in BACKEND_OPTIONS.values() for k in keys}
        where = "options"
    for key in options:
        if key not in known:
            if not known:
                raise UserError(f"{where}.{key}: unknown key; backend {backend} takes no options")
            raise unknown_key(where, key, known)
