"""Tiny ONNX graphs (built with onnx.helper, no torch) and a recorded host for the planner's unit tests."""

from __future__ import annotations

import numpy as np
import pytest

from xinfer_sdk.profiles import HostInfo

# A recorded 2-core AVX-512 host, so CPU figures do not depend on the machine running the tests.
HOST = HostInfo(arch="x86_64", cpu_model="Intel Xeon (recorded)", logical_cpus=2, usable_cpus=2.0,
                isa=("avx2", "fma", "avx512f", "avx512_vnni", "amx_int8"), memory_gb=16.0)


@pytest.fixture
def host():
    return HOST


@pytest.fixture
def host_peaks():
    from xinfer_sdk.planning.host import host_peaks

    return host_peaks(HOST, measure_bandwidth=False, clock=(2.5, "recorded"))


def mlp_proto(sizes=(64, 256, 10), batch="N"):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev = [], [], "x"
    rng = np.random.default_rng(0)
    for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits += [numpy_helper.from_array(rng.standard_normal((o, i)).astype(np.float32), f"w{k}"),
                  numpy_helper.from_array(np.zeros(o, np.float32), f"b{k}")]
        last = k == len(sizes) - 2
        gemm_out = "y" if last else f"g{k}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{k}", f"b{k}"], [gemm_out], transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [gemm_out], [f"h{k}"]))
            prev = f"h{k}"
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, sizes[0]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, sizes[-1]])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


@pytest.fixture
def mlp():
    return mlp_proto()


@pytest.fixture
def mlp_file(tmp_path):
    onnx = pytest.importorskip("onnx")
    p = tmp_path / "mlp.onnx"
    onnx.save(mlp_proto(), p)
    return p


@pytest.fixture
def seq_model_file(tmp_path):
    """[batch, seq, 16] -> MatMul -> Softmax: a dynamic sequence axis that needs --shapes."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((16, 16), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]),
                           helper.make_node("Softmax", ["h"], ["y"], axis=-1)], "seq",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 16])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    p = tmp_path / "seq.onnx"
    onnx.save(m, p)
    return p
