"""The profiles for the accelerators people buy now (issue 13 §1) and the common variants of older parts: each
loads, each device string from shared/reference/gpu-specs*.yaml detects as its own profile, unpublished figures are
'unknown' (never 0) and refuse to be priced, prices come from shared/reference/cloud-prices.yaml."""

from __future__ import annotations

import pytest

from xinfer_sdk.profiles import ProfileRegistry, detect, load_profile
from xinfer_sdk.profiles.detect import match_amd_name, match_nvml_name

NEW = ["b200", "gb200", "b300", "rtx-pro-6000-blackwell", "l40s", "h20", "gb10", "mi300x", "mi325x", "mi355x",
       "jetson-agx-thor", "jetson-t4000", "a100-sxm4-40gb", "a100-pcie-80gb", "h100-nvl", "h200-nvl"]

# Every NVML name in shared/reference/gpu-specs.yaml and gpu-specs-nextgen.yaml (nvml_name fields and the
# variants' names in the notes), as the driver reports it, and the profile it must select.
NVML = {
    "NVIDIA B200": "b200", "NVIDIA GB200": "gb200", "NVIDIA B300 SXM6 AC": "b300",
    "NVIDIA RTX PRO 6000 Blackwell Server Edition": "rtx-pro-6000-blackwell", "NVIDIA L40S": "l40s",
    "NVIDIA H20": "h20", "NVIDIA GB10": "gb10", "NVIDIA Thor": "jetson-agx-thor",
    "NVIDIA A100-SXM4-40GB": "a100-sxm4-40gb", "A100-SXM4-40GB": "a100-sxm4-40gb",
    "NVIDIA A100 80GB PCIe": "a100-pcie-80gb", "NVIDIA H100 NVL": "h100-nvl", "NVIDIA H200 NVL": "h200-nvl",
    "NVIDIA A100-PCIE-40GB": "a100-pcie-40gb", "NVIDIA A100-SXM4-80GB": "a100-sxm4-80gb", "Tesla T4": "t4",
    "NVIDIA A10": "a10", "NVIDIA A10G": "a10g", "NVIDIA L4": "l4", "NVIDIA H100 80GB HBM3": "h100-sxm",
    "NVIDIA H100 PCIe": "h100-pcie", "NVIDIA H200": "h200",
    "NVIDIA A100-SXM4-40GB MIG 1g.5gb": "a100-sxm4-40gb", "NVIDIA H100 NVL MIG 1g.12gb": "h100-nvl",
}
# amdsmi market names (amdgpu.ids names, and the 'OAM' forms boards report; vLLM's device-name map)
AMD = {"AMD Instinct MI300X": "mi300x", "AMD Instinct MI300X OAM": "mi300x", "AMD Instinct MI325X": "mi325x",
       "AMD Instinct MI325 OAM": "mi325x", "AMD Instinct MI355X": "mi355x", "AMD Instinct MI355 OAM": "mi355x"}


@pytest.fixture(scope="module")
def profiles():
    good, bad = ProfileRegistry(use_env=False).load_all()
    assert bad == []
    return good


def test_every_new_profile_ships_with_sourced_figures(profiles):
    names = {p.name for p in profiles}
    assert set(NEW) <= names
    for name in NEW:
        p = load_profile(name)
        for fig in ("compute_capability", "memory_gb", "memory_bandwidth_gbps", "peak_tflops", "tdp_w"):
            assert p.sources.get(fig), f"{name}: no source for {fig}"
        assert p.sources.get("l2_cache_mb") or p.figure_unknown("l2_cache_mb"), f"{name}: L2 neither sourced nor unknown"
        value, basis = p.peak(p.default_precision)
        assert value and value > 0, f"{name}: no peak for its default precision ({basis})"
        assert all(v is None or v > 0 for v in p.peak_tflops.values()), f"{name}: a zero peak"  # unknown is never 0


@pytest.mark.parametrize("name, expected", sorted(NVML.items()))
def test_every_reference_nvml_name_selects_its_own_profile(profiles, name, expected):
    assert match_nvml_name(name, profiles).name == expected


@pytest.mark.parametrize("name, expected", sorted(AMD.items()))
def test_amd_market_names(profiles, name, expected):
    assert match_amd_name(name, profiles).name == expected
    assert load_profile(expected).vendor == "amd"


def _thor_root(tmp_path, model, mem_gb):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: Neoverse-V3AE\n")
    (tmp_path / "proc/meminfo").write_text(f"MemTotal:       {int(mem_gb * 0.95e9 / 1024)} kB\n")
    if model:
        (tmp_path / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
    (tmp_path / "proc/device-tree/compatible").write_bytes(b"nvidia,tegra264\x00")
    return tmp_path


@pytest.mark.parametrize("model, mem_gb, expected", [
    ("NVIDIA Jetson AGX Thor Developer Kit", 128, "jetson-agx-thor"),
    ("NVIDIA Jetson AGX Thor Developer Kit", 64, "jetson-t4000"),   # a T4000 on the developer-kit carrier
    ("NVIDIA Jetson T4000", 64, "jetson-t4000"),
    (None, 64, "jetson-t4000"),                                     # no model string: the SoC and the memory
])
def test_thor_modules_share_one_nvml_name_and_the_device_tree_decides(tmp_path, model, mem_gb, expected):
    d = detect(ProfileRegistry(use_env=False), root=_thor_root(tmp_path, model, mem_gb), nvml_names=["NVIDIA Thor"],
               amd_names=[], use_env=False, env={})
    assert d.profile == expected


def test_unpublished_figures_are_unknown_not_zero():
    thor = load_profile("jetson-agx-thor")
    assert thor.peak_tflops["int8"] is None and thor.figure_unknown("peak_tflops.int8")
    value, basis = thor.peak("int8")
    assert value is None and basis.startswith("unknown")       # INT8 is deliberately not derived on Thor
    value, basis = thor.peak("fp16")
    assert value == 258.75 and basis.startswith("derived")
    assert load_profile("jetson-t4000").figure_unknown("peak_tflops.fp8")
    rtx = load_profile("rtx-pro-6000-blackwell")
    assert rtx.figure_unknown("peak_tflops.int8") and rtx.peak_tflops["fp8"] == 1000
    assert load_profile("mi355x").figure_unknown("peak_tflops.fp32")
    assert not load_profile("mi355x").figure_unknown("peak_tflops.tf32")   # not found and maybe absent: null
    assert load_profile("b300").figure_unknown("l2_cache_mb") and load_profile("b300").l2_cache_mb is None


@pytest.mark.parametrize("name, per_gpu, gpus, provider", [
    ("b200", 14.2416, 8, "aws"), ("l40s", 1.861, 1, "aws"), ("mi300x", 6.0, 8, "azure"),
    ("a100-sxm4-40gb", 2.744705, 8, "aws"), ("a100-pcie-80gb", 3.673, 1, "azure"),
])
def test_cloud_prices_from_the_reference(name, per_gpu, gpus, provider):
    p = load_profile(name)
    assert (p.usd_per_gpu_hour, p.gpus_per_instance, p.pricing["instance"]["provider"]) == (per_gpu, gpus, provider)
    primary = [o["usd_per_hour"] / o["gpus"] for o in p.pricing["offers"] if not o.get("secondary")]
    assert p.usd_per_gpu_hour == pytest.approx(min(primary))


@pytest.mark.parametrize("name", [n for n in NEW if n not in ("b200", "l40s", "mi300x", "a100-sxm4-40gb",
                                                                "a100-pcie-80gb")])
def test_the_others_are_unpriced_and_say_why(name):
    p = load_profile(name)
    assert p.pricing is None and p.usd_per_gpu_hour is None
    assert any(n.startswith("No price") for n in p.notes)


def test_precisions_follow_the_hardware():
    for name in NEW:
        p = load_profile(name)
        has_fp8 = not name.startswith("a100")                      # Ampere has no FP8; everything else here does
        assert ("fp8" in p.precisions) == has_fp8, name
    b300 = load_profile("b300").precisions
    assert b300.index("int8") > b300.index("bf16")   # Blackwell Ultra cut INT8 to ~1/30 of FP8
    for name in ("mi300x", "mi325x", "mi355x"):
        p = load_profile(name)
        assert p.backends == ("migraphx", "onnxruntime") and p.kubernetes.gpu_resource == "amd.com/gpu" and not p.tensorrt.versions
        assert p.arch_family == ("cdna4" if name == "mi355x" else "cdna3") and p.sm is None
    thor = load_profile("jetson-agx-thor")
    assert (thor.arch_family, thor.sm, thor.tensorrt.versions, thor.dla_cores) == ("blackwell-thor", "sm_110", (10,), 0)
    assert load_profile("gb10").unified_memory and load_profile("gb10").kind == "gpu"
