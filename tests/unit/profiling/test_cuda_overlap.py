"""The copy/compute overlap arithmetic behind the CUDA-event timing (the event calls need a GPU)."""

from __future__ import annotations

import pytest

from xinfer_sdk.profiling.cuda_events import overlap


def test_copies_of_one_worker_during_anothers_compute_count_as_overlapped():
    iv = [(0, "h2d", 0.0, 1.0), (0, "compute", 1.0, 5.0), (0, "d2h", 5.0, 6.0),
          (1, "h2d", 2.0, 3.0), (1, "compute", 6.0, 9.0), (1, "d2h", 9.0, 10.0)]
    r = overlap(iv)
    # worker 1's h2d (2-3) lies inside worker 0's compute; worker 0's d2h (5-6) touches no compute of worker 1
    assert r["copy_ms"] == pytest.approx(4.0)
    assert r["copy_overlapped_ms"] == pytest.approx(1.0)
    assert r["copy_overlap_share"] == pytest.approx(0.25)


def test_one_worker_cannot_overlap_with_itself():
    iv = [(0, "h2d", 0.0, 1.0), (0, "compute", 0.5, 5.0), (0, "d2h", 5.0, 6.0)]
    assert overlap(iv)["copy_overlapped_ms"] == 0.0


def test_no_copies_gives_no_share():
    assert overlap([(0, "compute", 0.0, 1.0)])["copy_overlap_share"] is None
