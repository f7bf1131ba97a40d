"""The accuracy gate's arithmetic: metrics per output and which thresholds fail a build."""

from __future__ import annotations

import numpy as np
from xinfer_sdk.converters.accuracy import compare, summarize

TH = {"min_cosine": 0.99, "min_top1_agreement": 0.95, "max_abs_error": None, "max_accuracy_drop": 0.01}


def _parts(*batches):
    return [[b] for b in batches]


def test_identical_outputs_pass_with_perfect_metrics():
    x = np.random.RandomState(0).randn(8, 10).astype(np.float32)
    rep = compare(_parts(x), _parts(x.copy()), ["logits"], labels=x.argmax(1), thresholds=TH)
    m = rep["outputs"]["logits"]
    assert rep["passed"] and rep["failures"] == [] and rep["primary_output"] == "logits"
    assert m["max_abs_error"] == 0 and abs(m["cosine"] - 1) < 1e-12 and m["top1_agreement"] == 1.0
    assert rep["true_accuracy"] == {"reference": 1.0, "converted": 1.0, "drop": 0.0, "output": "logits"}


def test_metrics_are_computed_not_assumed():
    ref = np.array([[1.0, 0.0], [0.0, 2.0]])
    got = np.array([[0.0, 1.0], [0.0, 2.0]])  # first row's argmax flips, error 1.0 on it
    rep = compare(_parts(ref), _parts(got), ["y"], labels=np.array([0, 1]), thresholds=TH)
    m = rep["outputs"]["y"]
    assert m["max_abs_error"] == 1.0 and m["max_rel_error"] == 0.5 and m["top1_agreement"] == 0.5
    assert abs(m["cosine"] - 4 / (5 ** 0.5 * 5 ** 0.5)) < 1e-12 and m["min_sample_cosine"] == 0.0
    assert rep["true_accuracy"]["converted"] == 0.5 and rep["true_accuracy"]["drop"] == 0.5
    assert not rep["passed"]
    assert any("cosine" in f for f in rep["failures"]) and any("top-1" in f for f in rep["failures"])
    assert any("drop 0.5000 > 0.01" in f for f in rep["failures"])


def test_top1_is_gated_on_the_primary_output_only_and_abs_limit_on_all():
    rng = np.random.RandomState(1)
    logits = rng.randn(16, 4)
    hidden = rng.randn(16, 8, 32)
    noisy = hidden + 0.05 * rng.randn(*hidden.shape)  # argmax over hidden flips somewhere, cosine stays ~1
    rep = compare([[logits, hidden]], [[logits, noisy]], ["logits", "hidden"], labels=None,
                  thresholds={**TH, "min_top1_agreement": 0.999})
    assert rep["outputs"]["hidden"]["top1_agreement"] < 0.999  # would fail if it were gated
    assert rep["primary_output"] == "logits" and rep["passed"], rep["failures"]
    rep = compare([[logits, hidden]], [[logits, noisy]], ["logits", "hidden"], labels=None,
                  thresholds={**TH, "max_abs_error": 1e-4})
    assert not rep["passed"] and rep["failures"][0].startswith("hidden: max abs error")


def test_nonfinite_and_integer_outputs():
    ref = np.ones((4, 3), np.float32)
    got = ref.copy()
    got[0, 0] = np.nan
    rep = compare([[ref, np.arange(4)]], [[got, np.array([0, 1, 2, 0])]], ["p", "idx"], labels=None, thresholds=TH)
    assert rep["outputs"]["p"]["nonfinite"] == 1 and rep["outputs"]["idx"]["exact_match"] == 0.75
    assert any("non-finite" in f for f in rep["failures"])
    assert "p: class, cos" in summarize(rep)


def test_batches_of_different_sequence_lengths_are_compared():
    a, b = np.ones((2, 5, 3)), np.ones((2, 7, 3))
    rep = compare([[a], [b]], [[a], [b]], ["h"], labels=None, thresholds=TH)
    assert rep["passed"] and rep["outputs"]["h"]["max_abs_error"] == 0
