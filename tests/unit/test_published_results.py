"""bench/published.py: the published GPU figures load, validate, and refuse malformed data with one clear line."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def published():
    spec = importlib.util.spec_from_file_location("published", ROOT / "bench" / "published.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["published"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def records(published):
    return published.load()


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load((ROOT / "bench" / "data" / "published_gpu_results.yaml").read_text())


def _one(published, records, **kw):
    rows = published.select(records, **kw)
    assert len(rows) == 1, [r.id for r in rows]
    return rows[0]


def test_issue_targets_have_a_primary_figure(published, records):
    """Every GPU and model the planner is held to (issue 12) has its published figure."""
    for gpu in ("t4", "a10", "l4", "a100-sxm4-80gb", "h100-sxm"):
        r = _one(published, records, model="resnet50", gpu=gpu, scenario="offline")
        assert r.precision == "int8" and r.samples_per_s > 1000 and r.harness == "tensorrt"
        for precision in ("int8",):
            _one(published, records, model="bert-large-384", gpu=gpu, precision=precision, scenario="offline")
    for gpu in ("t4", "a100-pcie-40gb", "l4"):
        for precision in ("int8", "fp16"):
            rows = published.select(records, model="bert-large-384", gpu=gpu, precision=precision,
                                    scenario="batch-latency")
            assert sorted(r.batch for r in rows) == [1, 2, 4, 8, 12, 16, 24, 32, 64, 128]
    orin = published.select(records, model="resnet50", gpu="jetson-agx-orin-32gb")
    assert {(r.scenario, r.dla) for r in orin} == {("offline", True), ("single-stream", False)}


def test_figures_match_their_printed_source(published, records):
    # values checked by hand against the files named in the records
    l4s = {r.round: r for r in published.select(records, model="resnet50", gpu="l4", scenario="offline",
                                                primary_only=False) if r.submitter == "NVIDIA"}
    l4 = l4s["v3.0"]
    assert (l4.value, l4.divisor, l4.printed, l4.primary) == (13157.8, 1, "Samples per second: 13157.8", False)
    assert l4.path == "closed/NVIDIA/results/L4x1_TRT/resnet50/Offline/performance/run_1/mlperf_log_summary.txt"
    assert l4.url.startswith("https://github.com/mlcommons/inference_results_v3.0/blob/1948f9b5b93c5b4dcafe15de")
    assert l4.batch == 32 and l4.batch_source.endswith("resnet50/Offline/__init__.py class L4x1: gpu_batch_size")
    newest = _one(published, records, model="resnet50", gpu="l4", scenario="offline")  # v3.1, read file by file
    assert (newest.round, newest.value, newest.primary) == ("v3.1", 12881.7, True)
    assert any("mlperf_index_extract.yaml" in n for n in newest.notes)
    h200 = _one(published, records, model="resnet50", gpu="h200", scenario="offline")
    assert (h200.system_value, h200.divisor, h200.value) == (756960.0, 8, 94620.0)
    ss = _one(published, records, model="resnet50", gpu="l4", scenario="single-stream")
    assert ss.printed == "90th percentile latency (ns) : 348735" and ss.latency_ms == pytest.approx(0.348735)
    assert ss.samples_per_s is None
    t4 = [r for r in published.select(records, gpu="t4", precision="int8", scenario="batch-latency") if r.batch == 8]
    assert t4[0].value == 49.24 and t4[0].samples_per_s == pytest.approx(8000 / 49.24)
    assert t4[0].printed.startswith("| 384 | 8 | 50.09 | 50.45 | 49.24 |")


def test_select_primary_only_by_default(published, records):
    everything = published.select(records, gpu="a100-sxm4-80gb", model="resnet50", scenario="offline",
                                  primary_only=False)
    assert len(everything) > 1 and sum(r.primary for r in everything) == 1
    assert {r.harness for r in everything} == {"tensorrt", "triton"}


def _write(tmp_path, doc):
    p = tmp_path / "published.yaml"
    p.write_text(yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False))
    return p


@pytest.mark.parametrize("mutate, expected", [
    (lambda r: r.update(value=r["value"] * 2), "!= system_value"),
    (lambda r: r.update(gpu="t5"), "gpu 't5' is not a profile name"),
    (lambda r: r.pop("printed"), "field 'printed' is missing"),
    (lambda r: r.update(printed="Samples per second: 1.0"), "does not show system_value"),
    (lambda r: r.update(scenario="single-stream"), "needs unit 'ms'"),
    (lambda r: r.update(precision="int4"), "precision 'int4' is not one of"),
    (lambda r: r.update(source="mlperf-v9.9"), "source 'mlperf-v9.9' is not in the file's sources"),
    (lambda r: r.update(colour="red"), "unknown field(s) ['colour']"),
])
def test_malformed_record_names_file_record_and_field(published, raw, tmp_path, mutate, expected):
    doc = copy.deepcopy(raw)
    good = [r for r in doc["records"] if r["model"] == "resnet50" and r["gpu"] == "t4"]
    i = next(i for i, r in enumerate(good) if r["primary"] and r["scenario"] == "offline")
    doc["records"] = good
    published.load(_write(tmp_path, doc))  # the untouched subset loads
    mutate(good[i])
    path = _write(tmp_path, doc)
    with pytest.raises(published.PublishedDataError) as err:
        published.load(path)
    msg = str(err.value)
    assert str(path) in msg and f"records[{i}]" in msg and expected in msg
    assert "\n" not in msg


def test_duplicate_primary_and_bad_commit_are_refused(published, raw, tmp_path):
    doc = copy.deepcopy(raw)
    prim = next(r for r in doc["records"] if r["primary"] and r["scenario"] == "offline")
    twin = next(r for r in doc["records"] if not r["primary"] and r["gpu"] == prim["gpu"]
                and r["benchmark"] == prim["benchmark"] and r["scenario"] == "offline")
    twin["primary"] = True
    doc["records"] = [prim, twin]
    with pytest.raises(published.PublishedDataError, match="second primary record"):
        published.load(_write(tmp_path, doc))
    doc = copy.deepcopy(raw)
    doc["records"] = doc["records"][:3]
    next(iter(doc["sources"].values()))["commit"] = "main"
    with pytest.raises(published.PublishedDataError, match="commit must be 40 hex digits"):
        published.load(_write(tmp_path, doc))


def test_missing_file_is_one_line(published, tmp_path):
    with pytest.raises(published.PublishedDataError, match="cannot read it"):
        published.load(tmp_path / "nope.yaml")


def test_every_file_read_one_by_one_became_a_record(records):
    """The lines copied from unmirrorable rounds each give exactly one record with the printed headline."""
    extract = yaml.safe_load((ROOT / "bench" / "data" / "mlperf_index_extract.yaml").read_text())
    by_key = {(r.round, r.path): r for r in records}
    summaries = [e for e in extract["files"] if "text" in e]
    assert summaries
    for e in summaries:
        r = by_key[(e["round"], e["path"])]
        assert r.source.commit == e["commit"] and r.printed in e["text"].splitlines()
