"""serve's flags of this round: tracing reaches server.tracing.configure, --trace-rate alone is refused,
--allow-nonfinite warns and does nothing."""

from __future__ import annotations

import logging

import pytest

from xinfer_sdk.errors import UserError
from xinfer_sdk.server import tracing
from xinfer_sdk.server.runner import configure_tracing, warn_allow_nonfinite


def test_trace_flags_call_configure(monkeypatch):
    calls = []
    monkeypatch.setattr(tracing, "configure", lambda *a, **kw: calls.append((a, kw)), raising=False)
    assert configure_tracing("http://127.0.0.1:4318", 0.25, "svc")
    assert calls == [(("http://127.0.0.1:4318", 0.25, "svc"), {})]


def test_no_trace_flags_leave_tracing_off(monkeypatch):
    calls = []
    monkeypatch.setattr(tracing, "configure", lambda *a, **kw: calls.append(a), raising=False)
    assert configure_tracing(None, None) and calls == []


def test_trace_rate_without_an_endpoint_is_refused():
    with pytest.raises(UserError, match="--trace-rate needs --trace-otlp"):
        configure_tracing(None, 0.5)


def test_allow_nonfinite_warns_it_does_nothing(caplog):
    with caplog.at_level(logging.WARNING):
        warn_allow_nonfinite()
    assert "deprecated and does nothing" in caplog.text and "--reject-nonfinite" in caplog.text
