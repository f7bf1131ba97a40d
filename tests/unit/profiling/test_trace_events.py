"""The profile's trace is valid trace-event JSON and a request's stages nest and add up to its latency."""

from __future__ import annotations

import json

import pytest

from xinfer_sdk.profiling import STAGES, Sent, StageRecorder, build_trace, request_stages, summarise
from xinfer_sdk.profiling.ort import OrtEvent

#: stamps are rounded to 0.001 us in the JSON: 7 stages can drift by this much from the request's duration
TOLERANCE_US = 0.002


def _recorded():
    """Two requests of one batch and one alone, recorded the way the batching core hands them over."""
    rec = StageRecorder()
    rec.batch("m", 0, [(1.0010, 1, 11), (1.0015, 2, 12)],
              {"take": 1.0030, "assembled": 1.0032, "computed": 1.0080, "scattered": 1.0081})
    rec.batch("m", 1, [(1.0050, 1, 13)], {"take": 1.0051, "assembled": 1.0052, "computed": 1.0090, "scattered": 1.0091})
    sent = [Sent(1.0000, 1.0085, 1.0010), Sent(1.0012, 1.0086, 1.0015), Sent(1.0049, 1.0093, 1.0050)]
    index: dict[float, list] = {}
    for b in rec.batches:
        for t_enq, _, _ in b.requests:
            index.setdefault(t_enq, []).append(b)
    return rec, [request_stages(s, index[s.t_enq]) for s in sent]


def _events(doc, pid=None, cat=None):
    return [e for e in doc["traceEvents"] if e["ph"] == "X" and (pid is None or e["pid"] == pid)
            and (cat is None or e["cat"] == cat)]


def test_trace_is_valid_trace_event_json():
    rec, reqs = _recorded()
    doc = json.loads(json.dumps(build_trace(reqs, rec.batches, [])))
    assert doc["displayTimeUnit"] == "ms"
    for e in doc["traceEvents"]:
        assert e["ph"] in ("X", "M") and isinstance(e["pid"], int) and isinstance(e["tid"], int)
        if e["ph"] == "X":
            assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0 and e["dur"] >= 0 and e["name"]


def test_each_request_stage_nests_in_its_request_and_they_add_up_to_its_latency():
    rec, reqs = _recorded()
    doc = build_trace(reqs, rec.batches, [])
    requests = _events(doc, cat="request")
    stages = _events(doc, cat="stage", pid=1)
    assert len(requests) == 3
    for r in requests:
        mine = [s for s in stages if s["tid"] == r["tid"] and r["ts"] - TOLERANCE_US <= s["ts"]
                and s["ts"] + s["dur"] <= r["ts"] + r["dur"] + TOLERANCE_US]
        assert [s["name"] for s in mine] == list(STAGES)
        assert sum(s["dur"] for s in mine) == pytest.approx(r["dur"], abs=TOLERANCE_US)
        assert r["dur"] == pytest.approx(r["args"]["latency_ms"] * 1e3, abs=TOLERANCE_US)


def test_overlapping_requests_are_drawn_on_separate_lanes():
    rec, reqs = _recorded()
    lanes = [e["tid"] for e in _events(build_trace(reqs, rec.batches, []), cat="request")]
    assert len(set(lanes)) == 3  # all three overlap in time


def test_batches_are_on_their_workers_track():
    rec, reqs = _recorded()
    batches = _events(build_trace(reqs, rec.batches, []), pid=2, cat="batch")
    assert sorted((b["tid"], b["args"]["samples"]) for b in batches) == [(0, 3), (1, 1)]


def test_queue_stage_is_enqueue_to_take():
    _, reqs = _recorded()
    assert dict((n, b - a) for n, a, b in reqs[0].stages)["queue"] == pytest.approx(0.0020)


def test_compute_is_split_by_op_type_and_copies_are_counted():
    rec, reqs = _recorded()
    ort = [OrtEvent(0, "model_run", "", "", 1.0033, 0.0045), OrtEvent(0, "fc1", "Gemm", "CUDA", 1.0034, 0.003),
           OrtEvent(0, "copy", "MemcpyToHost", "CUDA", 1.0070, 0.001)]
    s = summarise(reqs, rec.batches, ort)
    assert [o["op"] for o in s["ops"]] == ["Gemm", "MemcpyToHost"]
    assert s["copies_share_of_compute"] == pytest.approx(0.25)
    assert s["ort_aligned"] == 1.0  # the run lies inside worker 0's compute span


def test_an_ort_run_outside_every_compute_span_shows_as_misaligned():
    rec, reqs = _recorded()
    ort = [OrtEvent(0, "model_run", "", "", 1.0500, 0.001), OrtEvent(0, "fc1", "Gemm", "", 1.0500, 0.001)]
    assert summarise(reqs, rec.batches, ort)["ort_aligned"] == 0.0
