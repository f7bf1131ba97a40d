"""Detection replays recorded NVML names, Jetson device-tree strings and CPU facts."""

from __future__ import annotations

import pytest

from xinfer_sdk.profiles import ProfileRegistry, detect
from xinfer_sdk.profiles.detect import match_nvml_name, read_host

# NVML names as the driver reports them (reference: shared/reference/gpu-specs.yaml nvml_name fields).
NVML = {
    "Tesla T4": "t4",
    "NVIDIA A10": "a10",
    "NVIDIA A10G": "a10g",
    "NVIDIA L4": "l4",
    "NVIDIA A100-PCIE-40GB": "a100-pcie-40gb",
    "NVIDIA A100-SXM4-80GB": "a100-sxm4-80gb",
    "A100-SXM4-80GB": "a100-sxm4-80gb",  # very old drivers dropped the "NVIDIA " prefix
    "NVIDIA H100 80GB HBM3": "h100-sxm",
    "NVIDIA H100 PCIe": "h100-pcie",
    "NVIDIA H200": "h200",
    "NVIDIA A100-SXM4-80GB MIG 1g.10gb": "a100-sxm4-80gb",
}


@pytest.fixture(scope="module")
def registry():
    return ProfileRegistry(use_env=False)


def fake_root(tmp_path, *, model=None, compatible=None, release=None, mem_kb=25_000_000,
              flags="fpu sse avx2 fma avx512f avx512_vnni amx_int8 amx_tile"):
    (tmp_path / "proc").mkdir(parents=True, exist_ok=True)
    (tmp_path / "proc/cpuinfo").write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n")
    (tmp_path / "proc/meminfo").write_text(f"MemTotal:       {mem_kb} kB\nMemFree: 1 kB\n")
    if model is not None or compatible is not None:
        (tmp_path / "proc/device-tree").mkdir(parents=True, exist_ok=True)
        if model is not None:
            (tmp_path / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
        if compatible is not None:
            (tmp_path / "proc/device-tree/compatible").write_bytes(b"\x00".join(c.encode() for c in compatible) + b"\x00")
    if release is not None:
        (tmp_path / "etc").mkdir(exist_ok=True)
        (tmp_path / "etc/nv_tegra_release").write_text(release)
    return tmp_path


@pytest.mark.parametrize("name, expected", sorted(NVML.items()))
def test_nvml_names_map_to_profiles(registry, name, expected):
    profiles, _ = registry.load_all()
    assert match_nvml_name(name, profiles).name == expected


def test_unknown_gpu_falls_back_to_cpu_and_says_so(registry, tmp_path):
    d = detect(registry, root=fake_root(tmp_path), nvml_names=["NVIDIA GeForce RTX 4090"], use_env=False)
    assert d.profile == "cpu" and "but no profile matches" in d.reason


def test_nvml_detection_reports_the_name(registry, tmp_path):
    d = detect(registry, root=fake_root(tmp_path), nvml_names=["Tesla T4", "Tesla T4"], use_env=False)
    assert (d.profile, d.source) == ("t4", "nvml")
    assert "Tesla T4" in d.reason and "GPU 0 of 2" in d.reason


@pytest.mark.parametrize("model, mem_gb, expected", [
    ("NVIDIA Jetson AGX Orin Developer Kit", 64, "jetson-agx-orin-64gb"),
    ("NVIDIA Jetson AGX Orin", 32, "jetson-agx-orin-32gb"),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 16, "jetson-orin-nx-16gb"),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 8, "jetson-orin-nx-8gb"),
    ("NVIDIA Jetson Orin Nano Developer Kit", 8, "jetson-orin-nano-8gb"),
    ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", 8, "jetson-orin-nano-8gb"),
    ("NVIDIA Jetson Xavier NX Developer Kit (SD-card)", 8, "jetson-xavier-nx"),
    ("NVIDIA Jetson AGX Xavier Developer Kit", 32, "jetson-agx-xavier"),
])
def test_jetson_device_tree_strings(registry, tmp_path, model, mem_gb, expected):
    # MemTotal on a Jetson is a little below the marketed size (carve-outs)
    root = fake_root(tmp_path, model=model, compatible=["nvidia,p3737-0000+p3701-0005", "nvidia,tegra234"],
                     release="# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n",
                     mem_kb=int(mem_gb * 0.95e9 / 1024))
    d = detect(registry, root=root, nvml_names=["Orin (nvgpu)"], use_env=False)
    assert (d.profile, d.source) == (expected, "jetson")
    assert "L4T 36.4.3" in d.reason


def test_jetson_without_a_known_model_uses_the_soc(registry, tmp_path):
    root = fake_root(tmp_path, model="Custom carrier", compatible=["acme,board", "nvidia,tegra234"], mem_kb=15_000_000)
    d = detect(registry, root=root, nvml_names=[], use_env=False)
    assert d.profile == "jetson-orin-nx-16gb" and "tegra234" in d.reason


def test_plain_machine_is_cpu_with_isa_features(registry, tmp_path):
    d = detect(registry, root=fake_root(tmp_path), nvml_names=None, use_nvml=False, use_env=False)
    assert d.profile == "cpu"
    assert "avx512_vnni" in d.host.isa and d.host.int8_dot_product == "AMX-INT8"
    assert d.host.memory_gb == pytest.approx(25.6, abs=0.1)


def test_this_machine_detects_cpu_quietly(registry, caplog):
    d = detect(registry, use_env=False)
    assert d.profile == "cpu"
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


def test_env_override_wins(registry, monkeypatch):
    monkeypatch.setenv("XINFER_PROFILE", "l4")
    assert detect(registry).profile == "l4"


def test_cgroup_quota_limits_usable_cpus(tmp_path):
    root = fake_root(tmp_path)
    (root / "sys/fs/cgroup").mkdir(parents=True)
    (root / "sys/fs/cgroup/cpu.max").write_text("150000 100000\n")
    assert read_host(root).usable_cpus == 1.5
