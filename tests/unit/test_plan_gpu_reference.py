"""bench/plan_gpu_reference.py: the MLPerf ResNet-50 rows are planned with the submitter's res2 kernels merged."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ref():
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("plan_gpu_reference", ROOT / "bench" / "plan_gpu_reference.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["plan_gpu_reference"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("plan_gpu_reference", None)
    sys.path.remove(str(ROOT / "bench"))


def _dram(dev, curve, b):
    from xinfer_sdk.planning.gpu import kernel_terms, l2_share

    t = kernel_terms(dev, curve, b)
    return float(t.dram(l2_share(dev)).sum()), len(t.heads), float(t.matrix_s.sum())


def test_res2_fusion_keeps_the_work_and_keeps_the_stage_on_chip(ref):
    import reference_models as rm

    from xinfer_sdk.planning.cost import build_curve
    from xinfer_sdk.planning.device import gpu_model
    from xinfer_sdk.profiles import load_profile

    plain = build_curve(rm.resnet50(), precision="int8")
    fused = ref.merge_kernels(plain, [ref.RES2_NODES])
    pairs = ref.merge_kernels(plain, ref.RES2_PAIRS)
    dev = gpu_model(load_profile("t4"), "int8")
    d0, k0, m0 = _dram(dev, plain, 64)
    d1, k1, m1 = _dram(dev, fused, 64)
    d2, k2, _ = _dram(dev, pairs, 64)
    assert m1 == pytest.approx(m0)  # the same math, in fewer kernels
    assert k0 - k1 == 9  # res2's ten kernels (3 bottlenecks + the shortcut conv) become one
    assert k0 - k2 == 3  # three pair kernels on Xavier
    # the stage's 56x56 activations (~40 % of the traffic at batch 64, where nothing fits a T4's L2) stay on chip
    assert 0.3 < 1 - d1 / d0 < 0.5 and d1 < d2 < d0
    int8 = ref.int8_input(fused)
    assert np.all(int8.kernels.edge_itemsize[int8.kernels.edge_producer < 0] == 1.0)


def test_which_graph_a_record_is_planned_on(ref):
    from xinfer_sdk.profiles import load_profile

    assert ref.submitter_curve("resnet50", load_profile("t4")) == "resnet50-res2"  # sm_75: RES2_FULL_FUSION
    assert ref.submitter_curve("resnet50", load_profile("h100-sxm")) == "resnet50-res2"
    assert ref.submitter_curve("resnet50", load_profile("jetson-agx-xavier")) == "resnet50-res2pairs"  # sm_72
    assert ref.submitter_curve("bert-large-384", load_profile("t4")) == "bert177"


def test_the_32gb_orin_developer_kit_is_shown_not_fitted(ref):
    """NVIDIA's 32 GB "Orin_TRT" runs used the full Orin's GPU (12 CPU cores, within 0.3 % of the 64 GB kit), not the
    AGX Orin 32GB module's: no evidence for that profile, so no record of it enters the fit."""
    import published

    records = published.select(published.load())
    flags = {r.id: ref.record_flags(r) for r in records}
    kit = [r for r in records if r.gpu == "jetson-agx-orin-32gb"]
    assert kit and all(not flags[r.id][0] and "12 CPU cores" in flags[r.id][1] for r in kit)
    orin64 = [r for r in records if r.gpu == "jetson-agx-orin-64gb" and not r.dla]
    assert orin64 and all(flags[r.id] == (True, "") for r in orin64)
    dla = [r for r in records if r.dla]
    assert dla and all(not flags[r.id][0] and "2 DLA" in flags[r.id][1] for r in dla)
