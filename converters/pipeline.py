"""Run the conversion steps in order; each ends OK, FAILED or SKIPPED and is recorded in the manifest.

As in Triton Model Navigator's pipeline, the kind of error decides what happens:

- a step that cannot run here (no GPU, nothing to do for this precision) raises ``Skip``: SKIPPED with the
  reason, and the build goes on with what was already made;
- a user error (``XinferError``) in a required step: FAILED with the message, and the build stops with it;
- any other exception in a required step is a bug: FAILED, the traceback is logged, and it propagates;
- an optional step (the TensorRT engine) that fails for any reason is FAILED with its message and the
  build goes on: the bundle still carries the ONNX graphs and the engine plan, the target compiles it;
- except an error that says it ``fails_build`` (``EnginePrecisionError``: an engine was built, but not in the
  requested precision): FAILED, and the build stops with it, because the bundle would claim what did not happen.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from xinfer_sdk.bundle import StepResult
from xinfer_sdk.errors import XinferError

log = logging.getLogger(__name__)


class Skip(Exception):
    """Raised by a step that has nothing to do or cannot run here; the message is the reason."""


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Any], Any]  # run(ctx) -> message (str) | (message, details) | None
    optional: bool = False
    description: str = ""


def _outcome(value: Any) -> tuple[str, dict[str, Any]]:
    if value is None:
        return "", {}
    if isinstance(value, str):
        return value, {}
    message, details = value
    return message, dict(details or {})


def run_steps(steps: Sequence[Step], ctx: Any, *, results: list[StepResult],
              on_step: Callable[[StepResult], None] | None = None) -> list[StepResult]:
    """Run ``steps`` on ``ctx``, appending a StepResult per step to ``results`` (also on failure)."""
    for step in steps:
        start = time.perf_counter()
        status, message, details, error = "ok", "", {}, None
        try:
            message, details = _outcome(step.run(ctx))
        except Skip as exc:
            status, message = "skipped", str(exc)
        except XinferError as exc:
            status, message, error = "failed", str(exc), exc
        except Exception as exc:  # a bug in a required step, or anything in an optional one
            status, message, error = "failed", f"{type(exc).__name__}: {exc}", exc
            log.error("%-35s | failed", step.name, exc_info=exc)
        result = StepResult(name=step.name, status=status, seconds=time.perf_counter() - start, message=message,
                            details=details)
        results.append(result)
        log.info("%-35s | %s %.2fs %s", step.name, status, result.seconds, message)
        if on_step is not None:
            on_step(result)
        if error is not None and (not step.optional or getattr(error, "fails_build", False)):
            raise error
    return results
