"""The ``xinfer-sdk`` command. Needs the ``[cli]`` extra (click, rich); the runtime does not.

Exit codes: 0 ok · 1 internal error (a bug) · 2 user or input error · 3 accuracy gate failed.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    try:
        import click  # noqa: F401
        import rich  # noqa: F401
    except ImportError as exc:
        print(f"error: the xinfer-sdk command needs the '{exc.name}' package (install it with: "
              "pip install 'xinfer-sdk[cli]')", file=sys.stderr)
        return 2
    from .app import run

    return run(argv)


def entrypoint() -> None:  # pragma: no cover - console script shim
    sys.exit(main())
