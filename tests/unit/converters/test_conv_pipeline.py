"""The step runner: OK / SKIPPED / FAILED, what stops a build and what does not."""

from __future__ import annotations

import pytest
from xinfer_sdk.converters.pipeline import Skip, Step, run_steps

from xinfer_sdk.errors import ConversionError


def _ok(ctx):
    ctx.append("ok")
    return "did it", {"n": 1}


def _skip(ctx):
    raise Skip("nothing to do here")


def _user_error(ctx):
    raise ConversionError("bad model")


def _bug(ctx):
    raise RuntimeError("boom")


def test_ok_and_skipped_are_recorded_with_message_and_details():
    ctx, results = [], []
    run_steps([Step("a", _ok), Step("b", _skip), Step("c", lambda c: None)], ctx, results=results)
    assert [(r.name, r.status) for r in results] == [("a", "ok"), ("b", "skipped"), ("c", "ok")]
    assert results[0].message == "did it" and results[0].details == {"n": 1}
    assert results[1].message == "nothing to do here" and ctx == ["ok"]
    assert all(r.seconds >= 0 for r in results)


def test_user_error_in_required_step_stops_the_build_and_is_recorded():
    results = []
    with pytest.raises(ConversionError, match="bad model"):
        run_steps([Step("a", _ok), Step("b", _user_error), Step("c", _ok)], [], results=results)
    assert [(r.name, r.status) for r in results] == [("a", "ok"), ("b", "failed")]
    assert results[1].message == "bad model"


def test_bug_in_required_step_propagates():
    with pytest.raises(RuntimeError):
        run_steps([Step("a", _bug)], [], results=[])


def test_optional_step_failure_keeps_going():
    ctx, results, seen = [], [], []
    run_steps([Step("engine", _bug, optional=True), Step("after", _ok)], ctx, results=results, on_step=seen.append)
    assert [(r.name, r.status) for r in results] == [("engine", "failed"), ("after", "ok")]
    assert "RuntimeError: boom" in results[0].message and seen == results


def test_an_engine_in_the_wrong_precision_fails_the_build_even_from_the_optional_step():
    from xinfer_sdk.errors import EnginePrecisionError

    def wrong_precision(ctx):
        raise EnginePrecisionError("requested fp16 precision did not happen")

    results = []
    with pytest.raises(EnginePrecisionError, match="did not happen"):
        run_steps([Step("a", _ok), Step("tensorrt", wrong_precision, optional=True), Step("c", _ok)], [],
                  results=results)
    assert [(r.name, r.status) for r in results] == [("a", "ok"), ("tensorrt", "failed")]
