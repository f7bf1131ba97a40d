"""Silero VAD from the silero-vad wheel (issue 16 item 2): state [2, batch, 128] batched on axis 1, a scalar
sample rate without a batch axis. It builds without --shapes for cpu (fp32, int8 calibrated on audio with the
states its own recurrence carries) and t4 (fp16, int8: the ONNX artefacts and the TensorRT plan, no engine
here; the plan's chunk length comes from the data), inspect shows the axes, and the bundle's graph answers as the package's graph does. Serving it
statefully is tests/integration/server/test_sequence_server.py's."""

from __future__ import annotations

import numpy as np
import pytest
from corpus import SILERO_VAD
from corpus_data import silero_chunks

pytestmark = pytest.mark.slow  # four builds of ~10 s each (onnxslim, calibration)


@pytest.fixture(scope="module")
def vad_data(calib_dir):
    path = calib_dir / "vad.npz"
    np.savez(path, **silero_chunks(SILERO_VAD.fetch(), streams=3, seconds=1.5))
    return path


def _raw(report):
    for name in ("output", "stateN"):
        m = report["outputs"][name]
        assert m["kind"] == "raw" and "top1_agreement" not in m, m


def test_builds_without_shapes_and_records_the_axes(builds, cli_run):
    bundle, report, err = builds.get(SILERO_VAD, "cpu", "fp32")
    assert err is None and report["passed"] and "sr=16000" in report["data"], report
    _raw(report)
    specs = {s.name: s for s in bundle.manifest.inputs}
    assert specs["state"].batch_axis == 1 and specs["sr"].batch_axis is None and specs["input"].batch_axis == 0
    code, out, _ = cli_run("inspect", str(bundle.root))
    assert code == 0 and "[2, batch, 128]" in out


def test_the_bundle_answers_as_the_package_graph_does(builds, vad_data):
    import onnxruntime as ort

    bundle, _, _ = builds.get(SILERO_VAD, "cpu", "fp32")
    data = dict(np.load(vad_data))
    feeds = {"input": data["input"][:8], "state": data["state"][:, :8], "sr": data["sr"]}
    want = ort.InferenceSession(str(SILERO_VAD.fetch()), providers=["CPUExecutionProvider"]).run(None, feeds)
    model = bundle.root / next(a.path for a in bundle.manifest.artifacts.values() if a.role == "model")
    got = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    np.testing.assert_allclose(got[1], want[1], atol=1e-5)


@pytest.mark.parametrize("profile, precision", [("cpu", "int8"), ("t4", "fp16"), ("t4", "int8")])
def test_reduced_precision_builds(builds, vad_data, profile, precision):
    kw = {"calib": str(vad_data)} if precision == "int8" else {"eval": str(vad_data)}
    bundle, report, err = builds.get(SILERO_VAD, profile, precision, **kw)
    assert err is None and report["passed"], report["failures"]
    _raw(report)
    assert report["samples"] > 10 and report["data"].endswith("vad.npz")
    if profile == "t4":
        plan = bundle.manifest.engine_plan
        assert plan["profiles"][0]["state"]["max"] == [2, 32, 128] and plan["profiles"][0]["input"]["opt"][1] == 576
