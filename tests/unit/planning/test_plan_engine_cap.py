"""Issue 18 item 9: on a GPU, ``plan`` never recommends a max_batch_size above the bundle's TensorRT engine
plan maximum (the runtime would lower it, and the planned capacity would not hold), and --explain says so."""

from __future__ import annotations

import pytest

from xinfer_sdk.bundle import save_manifest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture
def wide_mlp(tmp_path):
    """Wide enough that, at 100k req/s, the planner batches beyond the cap the tests set."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    sizes, nodes, inits, prev = (64, 2048, 2048, 10), [], [], "x"
    for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits += [numpy_helper.from_array(rng.standard_normal((o, i)).astype(np.float32), f"w{k}")]
        out = "y" if k == len(sizes) - 2 else f"h{k}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{k}"], [out], transB=1))
        prev = out
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "mlp.onnx")
    return tmp_path / "mlp.onnx"


def _bundle(mlp_file, plan_max):
    from xinfer_sdk.runtime.loader import bundle_from_onnx

    b = bundle_from_onnx(mlp_file)
    b.manifest.max_batch_size = 256
    if plan_max:
        b.manifest.engine_plan = {"batch": {"max": plan_max}, "profiles": []}
    save_manifest(mlp_file.parent, b.manifest)
    return mlp_file.parent


def _plan(path, profile):
    import xinfer_sdk as xs

    return xs.plan(path, profiles=profile, target_qps=100_000, p99="50ms", sim_requests=2000, screen=500).plans[0]


def test_the_engine_plan_maximum_caps_the_recommendation_on_a_gpu(wide_mlp):
    free = _plan(_bundle(wide_mlp, 0), "a10").choice.policy.max_batch_size
    assert free > 2  # without the plan the model batches beyond the cap below (else the test proves nothing)
    pp = _plan(_bundle(wide_mlp, 2), "a10")
    assert pp.choice.policy.max_batch_size <= 2
    assert max(bt.batch for bt in pp.table) <= 2
    assert "capped at 2, the engine plan's maximum" in pp.choice.reason
    rows = {figure: (value, how) for figure, value, how in pp.explain}
    assert rows["engine plan batch maximum"][0] == "2" and "runtime lowers" in rows["engine plan batch maximum"][1]
    assert "powers of two up to 2," in rows["policy search"][1]


def test_a_cpu_profile_is_not_capped_by_a_tensorrt_plan(wide_mlp):
    pp = _plan(_bundle(wide_mlp, 2), "cpu")
    assert all(row[0] != "engine plan batch maximum" for row in pp.explain)
    assert "engine plan" not in pp.choice.reason
