"""Read a user's YAML file into a mapping, with one-line errors (config.yaml for load / serve)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


def read_mapping(path: str | os.PathLike[str], *, what: str = "a mapping") -> Mapping[str, Any]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise UserError(f"cannot read config {str(p)!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, Mapping):
        raise UserError(f"{p}: expected {what}")
    return data
