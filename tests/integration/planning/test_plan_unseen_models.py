"""`plan` on a model it has never seen (a small transformer with a sequence axis) for EVERY shipped profile."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from xinfer_sdk.errors import UserError  # noqa: E402
from xinfer_sdk.planning import plan  # noqa: E402
from xinfer_sdk.profiles import ProfileRegistry  # noqa: E402
from xinfer_sdk.shapes import parse_shapes  # noqa: E402

SHAPES = parse_shapes("ids:1x8..1x128..1x512")
FAST = {"sim_requests": 3000, "screen": 800}


@pytest.fixture(scope="module")
def every_profile_plan(transformer_file):
    good, bad = ProfileRegistry().load_all()
    assert not bad and len(good) >= 15
    return plan(transformer_file, profiles=good, p99="20ms", target_qps=3000, shapes=SHAPES, **FAST), good


def test_every_shipped_profile_gets_an_answer(every_profile_plan):
    result, profiles = every_profile_plan
    assert [p.profile.name for p in result.plans] == [p.name for p in profiles]
    for pp in result.plans:
        assert all(math.isfinite(bt.seconds) and bt.seconds > 0 for bt in pp.table), pp.profile.name
        assert pp.memory.max_batch >= 1, pp.profile.name
        ch = pp.choice
        assert ch.feasible, (pp.profile.name, ch.reason)
        assert ch.replicas >= 1 and ch.sim.p99 <= 0.020 and ch.policy.max_batch_size <= pp.memory.max_batch
        assert pp.explain and all(d for _, _, d in pp.explain)
    assert result.best["fewest_devices"] is not None
    json.dumps(result.to_dict())


def test_the_sequence_axis_drives_the_cost(transformer_file):
    short = plan(transformer_file, profiles="t4", p99="50ms", shapes=parse_shapes("ids:1x32"), **FAST).plans[0]
    long = plan(transformer_file, profiles="t4", p99="50ms", shapes=parse_shapes("ids:1x256"), **FAST).plans[0]
    f_short, f_long = short.curve.total_flops(1), long.curve.total_flops(1)
    # linear layers grow 8x with the sequence, attention's QK^T and AV 64x: more than 8x overall
    assert 8 < f_long / f_short < 64
    assert long.table[0].seconds > short.table[0].seconds
    # memory uses the MAX shape, latency the OPT one
    ranged = plan(transformer_file, profiles="t4", p99="50ms", shapes=parse_shapes("ids:1x8..1x32..1x256"),
                  **FAST).plans[0]
    assert ranged.curve.total_flops(1) == pytest.approx(f_short)
    assert ranged.memory.activation_per_sample == pytest.approx(long.memory.activation_per_sample)


def test_without_shapes_the_sequence_axis_is_a_clear_error(transformer_file):
    with pytest.raises(UserError, match=r"'ids'.*'seq'.*--shapes ids:"):
        plan(transformer_file, profiles="t4")


def test_int8_planning_of_an_fp32_graph_on_gpus_and_the_cpu(transformer_file):
    result = plan(transformer_file, profiles="t4,l4,cpu", precision="int8", p99="20ms", target_qps=3000,
                  shapes=SHAPES, **FAST)
    assert {p.precision for p in result.plans} == {"int8"}
    t4 = result.plans[0]
    # linear weights at 1 byte, the embedding table at 2 (Gather is not quantized): between 1/4 and 1/2 of FP32
    assert t4.device.matrix_tflops == 130
    assert t4.curve.param_bytes / 4 < t4.curve.weight_bytes < t4.curve.param_bytes / 2
