"""Request tracing is off by default and says which package to install when it is asked for without it."""

from __future__ import annotations

import sys

import pytest

from xinfer_sdk.errors import MissingDependency
from xinfer_sdk.server import tracing


def test_tracing_is_off_by_default():
    assert tracing.TRACER is None


def test_missing_opentelemetry_names_the_package_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import opentelemetry... -> ImportError
    with pytest.raises(MissingDependency) as info:
        tracing.configure("http://127.0.0.1:4318", rate=1.0)
    assert "opentelemetry-sdk" in str(info.value) and "xinfer-sdk[otel]" in info.value.hint
    assert tracing.TRACER is None


@pytest.mark.parametrize(("given", "url"), [("http://c:4318", "http://c:4318/v1/traces"),
                                            ("http://c:4318/", "http://c:4318/v1/traces"),
                                            ("https://c/otel/v1/traces", "https://c/otel/v1/traces")])
def test_a_collector_base_url_gets_the_otlp_traces_path(given, url):
    assert tracing.traces_url(given) == url


def test_an_endpoint_without_scheme_is_refused_with_an_example():
    from xinfer_sdk.errors import UserError

    with pytest.raises(UserError, match="http://127.0.0.1:4318"):
        tracing.traces_url("collector:4318")


def test_rate_samples_that_share_of_new_traces():
    pytest.importorskip("opentelemetry.sdk.trace")
    import random

    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tr = tracing.configure(None, 0.25, exporter=InMemorySpanExporter())
    try:
        random.seed(7)
        opened = [tr.begin("m", "1", None, "http") for _ in range(800)]
        for span in opened:
            if span is not None:
                tr.end(span, None, None)
        assert 150 <= sum(s is not None for s in opened) <= 250  # 200 expected; binomial sd ~12
    finally:
        tracing.shutdown()
