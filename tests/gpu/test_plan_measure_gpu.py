"""`plan --measure` on a GPU: the detected GPU profile is measured through the runtime (TensorRT or ONNX
Runtime CUDA) and its roofline fitted. Runs only where a CUDA device is present (skipped with the reason
elsewhere); it did not run on the machine the planner was written on (no GPU there)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _mlp(path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((256, 1024)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((1024, 10)).astype(np.float32), "w2")
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                               helper.make_node("MatMul", ["r", "w2"], ["output"])], "mlp",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 256])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def test_measure_fits_the_detected_gpu_profile(tmp_path):
    from xinfer_sdk.planning import plan
    from xinfer_sdk.profiles import detect

    det = detect()
    if det.source not in ("nvml", "jetson"):
        pytest.skip(f"no GPU profile detected here ({det.reason})")
    model = tmp_path / "mlp.onnx"
    _mlp(model)
    result = plan(model, profiles=det.profile, p99="10ms", measure=True,
                  measure_kw={"batch_sizes": (1, 2, 4, 8, 16, 32), "fit_on": (1, 4, 16, 32), "rounds": 3,
                              "min_seconds": 0.3}, sim_requests=3000, screen=1000)
    pp = result.plans[0]
    assert pp.profile.name == det.profile and pp.device.calibrated
    rows = pp.calibration["rows"]
    assert [r["batch"] for r in rows] == [1, 2, 4, 8, 16, 32] and all(r["measured_s"] > 0 for r in rows)
    assert pp.choice.feasible
