"""The shipped profiles load, carry the reference figures with sources, and set sane policy."""

from __future__ import annotations

import pytest

from xinfer_sdk.profiles import ProfileRegistry, load_profile

REQUIRED = ["cpu", "t4", "a10", "a10g", "l4", "a100-pcie-40gb", "a100-sxm4-80gb", "h100-sxm", "h100-pcie", "h200",
            "jetson-agx-orin-64gb", "jetson-orin-nx-16gb", "jetson-orin-nano-8gb", "jetson-xavier-nx",
            # issue 13 §1 and the common variants (tests/unit/profiles/test_new_hardware_profiles.py)
            "b200", "gb200", "b300", "rtx-pro-6000-blackwell", "l40s", "h20", "gb10", "mi300x", "mi325x", "mi355x",
            "jetson-agx-thor", "jetson-t4000", "a100-sxm4-40gb", "a100-pcie-80gb", "h100-nvl", "h200-nvl"]


def test_every_required_profile_ships_and_loads():
    reg = ProfileRegistry(use_env=False)
    good, bad = reg.load_all()
    assert bad == []
    names = {p.name for p in good}
    assert set(REQUIRED) <= names
    assert not any(n.startswith("_") for n in names), "abstract bases must not be listed"


def test_t4_has_its_datasheet_figures_and_policy():
    t4 = load_profile("t4")
    assert (t4.memory_gb, t4.memory_bandwidth_gbps, t4.compute_capability, t4.sm) == (16, 300, "7.5", "sm_75")
    assert t4.peak_tflops["fp16"] == 65 and t4.peak_tflops["int8"] == 130 and t4.peak_tflops["fp32"] == 8.1
    assert t4.peak_tflops["bf16"] is None and t4.peak_tflops["fp8"] is None
    assert set(t4.precisions) == {"int8", "fp16", "fp32"}
    assert "bf16" not in t4.precisions and "fp8" not in t4.precisions
    assert t4.quantization.scheme == "symmetric"
    assert any("nvidia.com" in u for u in t4.sources["peak_tflops"])
    assert t4.match.nvml_names == ("Tesla T4",)


@pytest.mark.parametrize("name", [n for n in REQUIRED if n != "cpu"])
def test_gpu_figures_have_sources_and_the_default_precision_has_a_peak(name):
    p = load_profile(name)
    for fig in ("memory_gb", "memory_bandwidth_gbps", "peak_tflops", "compute_capability"):
        assert p.sources.get(fig), f"{name}: no source for {fig}"
    value, basis = p.peak(p.default_precision)
    assert value and value > 0, f"{name}: no peak for its default precision ({basis})"
    assert p.usable_memory_gb() < p.memory_gb
    assert p.batch.max_batch_size >= max(p.batch.preferred_batch_sizes or [1])


def test_fp8_only_where_hardware_has_it():
    for name in ("t4", "a10", "a100-sxm4-80gb", "jetson-agx-orin-64gb", "jetson-xavier-nx"):
        assert "fp8" not in load_profile(name).precisions, name
    for name in ("l4", "h100-sxm", "h100-pcie", "h200"):
        assert "fp8" in load_profile(name).precisions, name
    assert "bf16" not in load_profile("jetson-xavier-nx").precisions


def test_a10g_inherits_a10_but_not_its_tensor_throughput():
    a10, a10g = load_profile("a10"), load_profile("a10g")
    assert a10g.chain == ("a10g", "a10", "_datacenter")
    assert (a10g.memory_gb, a10g.memory_bandwidth_gbps, a10g.compute_capability) == (24, 600, "8.6")
    assert a10g.peak_tflops["bf16"] == 70 and a10.peak_tflops["bf16"] == 125
    assert a10g.peak_tflops["fp16"] is None
    value, basis = a10g.peak("fp16")
    assert value == 70 and basis.startswith("derived")


def test_jetson_profiles_are_unified_tensorrt_10_with_dla_fallback():
    orin = load_profile("jetson-agx-orin-64gb")
    assert orin.unified_memory and orin.kind == "jetson"
    assert orin.tensorrt.versions == (10,)
    assert orin.dla_cores == 2 and orin.tensorrt.use_dla and orin.tensorrt.dla_gpu_fallback
    assert load_profile("h100-sxm").tensorrt.versions == (10, 11)
    nano = load_profile("jetson-orin-nano-8gb")
    assert nano.dla_cores == 0 and not nano.tensorrt.use_dla


def test_cpu_profile_uses_unsigned_activations_and_onnxruntime():
    cpu = load_profile("cpu")
    assert cpu.quantization.activation_type == "uint8" and cpu.quantization.weight_type == "int8"
    assert cpu.backends[0] == "onnxruntime" and cpu.default_precision == "fp32"


def test_unsupported_precision_is_refused_with_the_reason():
    from xinfer_sdk.errors import UserError

    with pytest.raises(UserError, match=r"T4 \(sm_75\) has no FP8 tensor cores"):
        load_profile("t4").check_precision("fp8")
    assert load_profile("t4").check_precision("auto") == "fp16"


EXISTING_GPUS = ["t4", "a10", "a10g", "l4", "a100-pcie-40gb", "a100-sxm4-80gb", "h100-sxm", "h100-pcie", "h200"]


@pytest.mark.parametrize("name", EXISTING_GPUS)
def test_gpu_profiles_carry_l2_and_a_price_or_say_why_not(name):
    p = load_profile(name)
    assert p.l2_cache_mb and p.sources.get("l2_cache_mb"), f"{name}: no sourced L2"
    if p.pricing is None:
        assert any(n.startswith("No price") for n in p.notes), f"{name}: no price and no note saying why"
    else:
        inst = p.pricing["instance"]
        assert p.usd_per_gpu_hour == pytest.approx(inst["usd_per_hour"] / inst["gpus"], rel=1e-6)
        assert p.gpus_per_instance == inst["gpus"] and not inst.get("secondary") and p.sources.get("pricing")
        primary = [o["usd_per_hour"] / o["gpus"] for o in p.pricing.get("offers", []) if not o.get("secondary")]
        assert p.usd_per_gpu_hour == pytest.approx(min(primary), rel=1e-6)


def test_reference_prices_and_l2():
    expect = {"t4": (0.526, 1, 4), "l4": (0.8048, 1, 48), "a10g": (1.006, 1, 6), "a10": (3.2, 1, 6),
              "a100-sxm4-80gb": (3.430881, 8, 40), "h100-sxm": (6.88, 1, 50), "h200": (7.912, 8, 50),
              "h100-pcie": (None, 1, 50), "a100-pcie-40gb": (None, 1, 40)}
    for name, (price, gpus, l2) in expect.items():
        p = load_profile(name)
        assert (p.usd_per_gpu_hour, p.gpus_per_instance, p.l2_cache_mb) == (price, gpus, l2), name


def test_jetson_and_cpu_have_no_price():
    for name in ("cpu", "jetson-agx-orin-64gb", "jetson-orin-nano-8gb", "jetson-agx-xavier"):
        p = load_profile(name)
        assert p.pricing is None and p.usd_per_gpu_hour is None and p.gpus_per_instance == 1, name
        assert any(n.startswith("No price") for n in p.notes), name
