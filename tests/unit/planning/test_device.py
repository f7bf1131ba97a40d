"""Device model: roofline arithmetic, precision choice, the cpu profile's host estimate."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx")

from xinfer_sdk.errors import UserError  # noqa: E402
from xinfer_sdk.planning.cost import build_curve  # noqa: E402
from xinfer_sdk.planning.device import (  # noqa: E402
    Factor,
    batch_time,
    device_model,
    gpu_model,
    op_times,
    soft_max,
    worker_service,
)
from xinfer_sdk.planning.host import host_peaks, read_clock_ghz  # noqa: E402
from xinfer_sdk.profiles import load_profile  # noqa: E402


def test_cpu_peaks_come_from_cores_clock_and_isa(host_peaks, host):
    # 2 cores x 2.5 GHz x 64 FLOP/cycle (AVX-512, two FMA units) = 0.32 TFLOPS; AMX-INT8 2048 ops/cycle
    assert host_peaks.tflops["fp32"] == pytest.approx(2 * 2.5 * 64 / 1e3)
    assert host_peaks.tflops["int8"] == pytest.approx(2 * 2.5 * 2048 / 1e3)
    assert "AVX-512" in host_peaks.derivation["fp32"] and "AMX" in host_peaks.derivation["int8"]
    assert host_peaks.bandwidth_gbps == 16.0 and "not measured" in host_peaks.bandwidth_source
    plain = host_peaks_for(host, ("avx2", "fma"))
    assert plain.tflops["fp32"] == pytest.approx(2 * 2.5 * 32 / 1e3)
    assert plain.tflops["int8"] == pytest.approx(2 * plain.tflops["fp32"])  # no VNNI: 2x FP32


def host_peaks_for(host, isa):
    import dataclasses

    return host_peaks(dataclasses.replace(host, isa=tuple(isa)), measure_bandwidth=False, clock=(2.5, "recorded"))


def test_clock_from_proc_cpuinfo(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text("processor : 0\ncpu MHz\t\t: 2599.998\nprocessor : 1\ncpu MHz : 3100.0\n")
    ghz, src = read_clock_ghz(str(tmp_path))
    assert ghz == pytest.approx(3.1) and "cpuinfo" in src
    empty = tmp_path / "empty"
    empty.mkdir()
    assert read_clock_ghz(str(empty))[0] > 0


def test_memory_bound_and_compute_bound_ops_follow_the_roofline(mlp, host_peaks):
    curve = build_curve(mlp)
    dev = device_model(load_profile("cpu"), "fp32", peaks=host_peaks)
    flops, nbytes = curve.at(1)
    t, t_c, t_m = op_times(dev, curve, 1)
    gemm = 0  # first op: Gemm 64 -> 256
    assert t_c[gemm] == pytest.approx(flops[gemm] / (dev.matrix_tflops * 1e12 * dev.eff_matrix.value))
    assert t_m[gemm] == pytest.approx(nbytes[gemm] / (dev.bandwidth_gbps * 1e9 * dev.eff_memory.value))
    assert t[gemm] == pytest.approx(soft_max(t_c[gemm], t_m[gemm]) + dev.op_overhead.value)
    assert t_m[gemm] > t_c[gemm]  # batch 1: a GEMV streams its weights
    relu = 1
    assert curve.fused[relu] and t[relu] == pytest.approx(soft_max(t_c[relu], t_m[relu]))  # no per-op overhead
    big = batch_time(dev, curve, 4096, requests=1)
    assert big.bound == "compute" and batch_time(dev, curve, 1).bound in ("memory bandwidth", "overhead")
    assert batch_time(dev, curve, 4096).bound == "overhead"  # 4096 requests of host work dwarf a tiny MLP


def test_batch_time_adds_overheads_and_grows_with_batch(mlp, host_peaks):
    curve = build_curve(mlp)
    dev = device_model(load_profile("cpu"), "fp32", peaks=host_peaks)
    one, eight = batch_time(dev, curve, 1), batch_time(dev, curve, 8)
    assert one.seconds == pytest.approx(one.host_s + one.device_s)
    assert one.host_s == pytest.approx(dev.batch_overhead.value + dev.request_overhead.value)
    assert batch_time(dev, curve, 8, requests=1).request_s == pytest.approx(dev.request_overhead.value)
    assert eight.seconds > one.seconds and eight.batch / eight.seconds > 1 / one.seconds


def test_gpu_fp32_uses_tf32_tensor_cores_where_the_profile_has_them():
    a100 = gpu_model(load_profile("a100-sxm4-80gb"), "fp32")
    assert a100.matrix_tflops == 156 and "TF32" in a100.matrix_basis
    t4 = gpu_model(load_profile("t4"), "fp32")  # Turing: no TF32
    assert t4.matrix_tflops == 8.1
    assert gpu_model(load_profile("t4"), "int8").matrix_tflops == 130
    assert t4.link_gbps == 15.75 and a100.link_gbps == 31.5  # PCIe Gen3 / Gen4 x16


def test_jetson_shares_memory_with_the_host_and_a10g_derives_missing_peaks():
    orin = gpu_model(load_profile("jetson-agx-orin-64gb"), "int8")
    assert orin.link_gbps is None and orin.kernel_floor.value > gpu_model(load_profile("t4"), "int8").kernel_floor.value
    a10g = device_model(load_profile("a10g"), "int8")
    assert a10g.matrix_tflops == 140 and "derived" in a10g.matrix_basis  # derived: 2 x FP16
    assert a10g.vector_tflops == 17.5 and "derived" in a10g.vector_basis


def test_a_precision_without_any_peak_is_a_user_error():
    import dataclasses

    t4 = load_profile("t4")
    blank = dataclasses.replace(t4, peak_tflops={**t4.peak_tflops, "fp16": None}, derived_tflops={})
    with pytest.raises(UserError, match="cannot plan FP16 on t4: peak_tflops.fp16 is not given"):
        gpu_model(blank, "fp16")
    no_fp32 = dataclasses.replace(t4, peak_tflops={**t4.peak_tflops, "fp32": None}, derived_tflops={})
    assert gpu_model(no_fp32, "fp16").vector_tflops == pytest.approx(65 / 8)  # tensor peak / 8


def test_every_factor_says_where_it_comes_from():
    for name in ("t4", "l4", "jetson-orin-nano-8gb"):
        dev = gpu_model(load_profile(name), "fp16")
        for f in (dev.eff_matrix, dev.eff_vector, dev.eff_memory, dev.kernel_floor, dev.op_overhead,
                  dev.batch_overhead, dev.request_overhead):
            assert isinstance(f, Factor) and len(f.source) > 20


def test_workers_split_cpu_cores_but_share_a_gpu(mlp, host_peaks):
    curve = build_curve(mlp)
    cpu = device_model(load_profile("cpu"), "fp32", peaks=host_peaks)
    bt = batch_time(cpu, curve, 64)
    host, dev2 = worker_service(cpu, bt, 2)
    assert dev2 == pytest.approx(bt.floor_s + 2 * (bt.compute_s + bt.memory_s))
    gpu = gpu_model(load_profile("t4"), "fp16")
    gbt = batch_time(gpu, curve, 64)
    assert worker_service(gpu, gbt, 2) == (gbt.host_s, gbt.device_s)
