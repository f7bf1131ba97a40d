"""Which GPU detection reports (review D13), CUDA_VISIBLE_DEVICES, the NVML/amdsmi readers, AMD and Thor matching."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest

from xinfer_sdk.profiles import ProfileRegistry, detect
from xinfer_sdk.profiles._devices import Gpu, cuda_view, read_amd_gpus, read_nvml_gpus
from xinfer_sdk.profiles.detect import cuda_to_nvml_index, match_amd_name
from xinfer_sdk.profiles.loader import builtin_dir

PCI = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
FOUR = [Gpu(0, "Tesla T4", "GPU-aaaa1111"), Gpu(1, "Tesla T4", "GPU-bbbb2222", ("MIG-cccc3333", "MIG-dddd4444")),
        Gpu(2, "Tesla T4", "GPU-bbbb9999"), Gpu(3, "Tesla T4", "GPU-eeee5555")]


@pytest.fixture(scope="module")
def registry():
    return ProfileRegistry(use_env=False)


def isolated(folder, **files):
    """A registry of only these profiles plus the shipped abstract bases (new shipped profiles stay out)."""
    base = builtin_dir()
    for name in ("_datacenter", "_jetson"):
        (folder / f"{name}.yaml").write_text((base / f"{name}.yaml").read_text())
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text))
    return ProfileRegistry([folder], use_env=False, include_builtin=False)


@pytest.fixture
def cpu_root(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: avx2\n")
    (tmp_path / "proc/meminfo").write_text("MemTotal:       25000000 kB\n")
    return tmp_path


@pytest.mark.parametrize("visible, expected", [
    (None, (0, 1, 2, 3)),
    ("2,1", (2, 1)),
    ("0,2,-1,1", (0, 2)),               # CUDA stops at the first invalid entry
    ("", ()),                           # set but empty: no GPU
    ("GPU-eeee,GPU-aaaa1111", (3, 0)),  # UUIDs and unique UUID prefixes
    ("GPU-bbbb", ()),                   # an ambiguous prefix names no GPU
    ("MIG-dddd4444", (1,)),             # a MIG device is on its parent GPU
    ("MIG-GPU-bbbb2222/1/0", (1,)),     # pre-R470 MIG form
    ("1,1,3", (1, 3)),
])
def test_cuda_visible_devices(visible, expected):
    env = dict(PCI) if visible is None else {**PCI, "CUDA_VISIBLE_DEVICES": visible}
    assert cuda_view(FOUR, env).nvml == expected


def test_cuda_to_nvml_index_is_none_where_the_order_is_a_guess():
    mixed = [Gpu(0, "NVIDIA L4"), Gpu(1, "Tesla T4")]
    assert cuda_to_nvml_index(0, gpus=mixed, env={"CUDA_VISIBLE_DEVICES": "1"}) is None  # fastest-first, mixed host
    assert cuda_to_nvml_index(0, gpus=mixed, env={**PCI, "CUDA_VISIBLE_DEVICES": "1"}) == 1
    assert cuda_to_nvml_index(1, gpus=mixed, env=PCI) == 1
    assert cuda_to_nvml_index(2, gpus=mixed, env=PCI) is None  # no such CUDA device
    assert cuda_to_nvml_index(0, gpus=FOUR, env={"CUDA_VISIBLE_DEVICES": "3"}) == 3  # same model: order is moot
    uuids = [Gpu(0, "NVIDIA L4", "GPU-aa"), Gpu(1, "Tesla T4", "GPU-bb")]
    assert cuda_to_nvml_index(0, gpus=uuids, env={"CUDA_VISIBLE_DEVICES": "GPU-bb"}) == 1  # UUIDs are exact


def test_detect_names_the_gpu_cuda_will_use(registry, cpu_root):
    d = detect(registry, root=cpu_root, nvml_names=["NVIDIA L4", "Tesla T4"], use_env=False,
               env={**PCI, "CUDA_VISIBLE_DEVICES": "1"})
    assert (d.profile, d.gpu_index, d.cuda_index) == ("t4", 1, 0)
    assert "GPU 1 of 2 by NVML index, CUDA device 0" in d.reason and "other GPUs here match l4" in d.reason
    assert d.evidence["gpus"][0] == {"nvml_index": 0, "name": "NVIDIA L4", "uuid": None, "cuda_index": None,
                                     "profile": "l4"}


def test_detect_prefers_cuda_device_0_then_the_next_visible(registry, cpu_root):
    d = detect(registry, root=cpu_root, nvml_names=["Tesla T4", "NVIDIA L4"], use_env=False,
               env={**PCI, "CUDA_VISIBLE_DEVICES": "1,0"})
    assert (d.profile, d.gpu_index, d.cuda_index) == ("l4", 1, 0)
    d = detect(registry, root=cpu_root, nvml_names=["NVIDIA Z999", "Tesla T4"], use_env=False, env=PCI)
    assert (d.profile, d.gpu_index, d.cuda_index) == ("t4", 1, 1) and "GPU 1 of 2" in d.reason


def test_detect_says_when_the_matched_gpu_is_hidden_or_the_order_uncertain(registry, cpu_root):
    d = detect(registry, root=cpu_root, nvml_names=["Tesla T4"], use_env=False, env={"CUDA_VISIBLE_DEVICES": ""})
    assert d.profile == "t4" and d.cuda_index is None and "not visible to this process" in d.reason
    d = detect(registry, root=cpu_root, nvml_names=["NVIDIA L4", "Tesla T4"], use_env=False, env={})
    assert d.profile == "l4" and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in d.reason
    d = detect(registry, root=cpu_root, nvml_names=["NVIDIA L4", "Tesla T4"], nvml_uuids=["GPU-a", "GPU-b"],
               use_env=False, env={"CUDA_VISIBLE_DEVICES": "GPU-b"})
    assert (d.profile, d.gpu_index, d.cuda_index) == ("t4", 1, 0)


# -- the readers, with the vendor modules replaced by recording doubles -------------------------------------
class NVMLError(Exception):
    pass


def fake_pynvml(calls):
    names = [b"NVIDIA A100-SXM4-80GB", "NVIDIA L4"]

    def rec(name, result=None):
        def fn(*args):
            calls.append((name, *args))
            return result(*args) if callable(result) else result
        return fn

    def mig_count(h):
        calls.append(("nvmlDeviceGetMaxMigDeviceCount", h))
        if h == "h1":
            raise NVMLError("Not Supported")
        return 2

    def mig_handle(h, j):
        calls.append(("nvmlDeviceGetMigDeviceHandleByIndex", h, j))
        if j == 1:
            raise NVMLError("Not Found")
        return f"{h}-mig{j}"

    return types.SimpleNamespace(
        nvmlInit=rec("nvmlInit"), nvmlShutdown=rec("nvmlShutdown"), nvmlDeviceGetCount=rec("nvmlDeviceGetCount", 2),
        nvmlDeviceGetHandleByIndex=rec("nvmlDeviceGetHandleByIndex", lambda i: f"h{i}"),
        nvmlDeviceGetName=rec("nvmlDeviceGetName", lambda h: names[int(h[1])]),
        nvmlDeviceGetUUID=rec("nvmlDeviceGetUUID", lambda h: f"GPU-{h}" if "mig" not in h else f"MIG-{h}"),
        nvmlDeviceGetMaxMigDeviceCount=mig_count, nvmlDeviceGetMigDeviceHandleByIndex=mig_handle)


def test_read_nvml_gpus_calls_the_documented_api(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(calls))
    gpus, why = read_nvml_gpus()
    assert why == "NVML"
    assert gpus == [Gpu(0, "NVIDIA A100-SXM4-80GB", "GPU-h0", ("MIG-h0-mig0",)), Gpu(1, "NVIDIA L4", "GPU-h1")]
    assert calls[0] == ("nvmlInit",) and calls[-1] == ("nvmlShutdown",)
    assert ("nvmlDeviceGetHandleByIndex", 1) in calls and ("nvmlDeviceGetMigDeviceHandleByIndex", "h0", 0) in calls


def test_read_nvml_gpus_without_the_package_or_driver(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert read_nvml_gpus() == (None, "nvidia-ml-py is not installed")

    def fail():
        raise NVMLError("Driver Not Loaded")
    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=fail))
    assert read_nvml_gpus() == (None, "NVML unavailable (Driver Not Loaded)")


def test_read_amd_gpus_uses_market_name_and_shuts_down(monkeypatch):
    calls = []
    fake = types.SimpleNamespace(
        amdsmi_init=lambda *a: calls.append(("init", *a)),
        amdsmi_shut_down=lambda: calls.append(("shut_down",)),
        amdsmi_get_processor_handles=lambda: ["p0", "p1"],
        amdsmi_get_gpu_asic_info=lambda h: {"market_name": "AMD Instinct MI300X", "vendor_id": 4098, "device_id": 0x74a1})
    monkeypatch.setitem(sys.modules, "amdsmi", fake)
    gpus, why = read_amd_gpus()
    assert why == "amdsmi" and [g.name for g in gpus] == ["AMD Instinct MI300X"] * 2 and gpus[1].vendor == "amd"
    assert calls == [("init",), ("shut_down",)]


def test_no_amdsmi_is_no_amd_detection_not_an_error(monkeypatch, registry, cpu_root):
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    assert read_amd_gpus() == (None, "amdsmi is not installed")
    d = detect(registry, root=cpu_root, nvml_names=[], use_env=False, env={})
    assert d.profile == "cpu" and "amdsmi" not in d.reason


AMD_PROFILE = """
    name: mi-test
    extends: _datacenter
    vendor: amd
    match: {amd_product_names: ["AMD Instinct MI300X"]}
    compute_capability: gfx942
    memory_gb: 192
    memory_bandwidth_gbps: 5300
    peak_tflops: {fp32: 163.4, tf32: 653.7, fp16: 1307.4, bf16: 1307.4, int8: 2614.9, fp8: 2614.9}
    tdp_w: 750
    backends: [onnxruntime, torch]
    sources: {compute_capability: [https://x], memory_gb: [https://x], memory_bandwidth_gbps: [https://x],
              peak_tflops: [https://x], tdp_w: [https://x]}
"""


@pytest.mark.parametrize("name, expected", [
    ("AMD Instinct MI300X", "mi-test"), ("AMD Instinct MI300X VF", "mi-test"), ("amd instinct mi300x oam", "mi-test"),
    ("AMD Instinct MI300A", None), ("AMD Instinct MI325X", None),
])
def test_amd_names(tmp_path, cpu_root, name, expected):
    reg = isolated(tmp_path, **{"mi-test": AMD_PROFILE})
    profiles, bad = reg.load_all()
    assert bad == []
    got = match_amd_name(name, profiles)
    assert (got.name if got else None) == expected
    d = detect(reg, root=cpu_root, nvml_names=[], amd_names=[name], use_env=False, env={})
    if expected:
        assert (d.profile, d.source, d.gpu_index) == (expected, "amdsmi", 0) and name in d.reason
    else:
        assert d.profile == "cpu" and f"found GPU {name!r} but no profile matches it" in d.reason


THOR = """
    name: {name}
    extends: _jetson
    match: {{nvml_names: ["NVIDIA Thor"], cuda_names: ["Thor"], device_tree: [{tree}]}}
    compute_capability: "11.0"
    memory_gb: {mem}
    memory_bandwidth_gbps: 273
    peak_tflops: {{fp32: unknown, tf32: unknown, fp16: unknown, bf16: unknown, int8: unknown, fp8: 517.5}}
    dla_cores: 0
    tdp_w: 130
    sources: {{compute_capability: [https://x], memory_gb: [https://x], memory_bandwidth_gbps: [https://x],
              peak_tflops: [https://x], tdp_w: [https://x]}}
"""


@pytest.mark.parametrize("model, mem_gb, expected", [
    ("NVIDIA Jetson AGX Thor Developer Kit", 128, "thor-test"),
    ("Custom carrier", 64, "t4000-test"),   # no known model: the SoC (tegra264) and memory decide
    ("Custom carrier", 128, "thor-test"),
])
def test_thor_nvml_name_is_settled_by_the_device_tree(tmp_path, model, mem_gb, expected):
    folder = tmp_path / "profiles"
    folder.mkdir()
    reg = isolated(folder, **{"thor-test": THOR.format(name="thor-test", tree='"AGX Thor"', mem=128),
                              "t4000-test": THOR.format(name="t4000-test", tree='"T4000"', mem=64)})
    root = tmp_path / "root"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: ARMv9\n")
    (root / "proc/meminfo").write_text(f"MemTotal: {int(mem_gb * 0.95e9 / 1024)} kB\n")
    (root / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
    (root / "proc/device-tree/compatible").write_bytes(b"nvidia,p3834-0008\x00nvidia,tegra264\x00")
    d = detect(reg, root=root, nvml_names=["NVIDIA Thor"], use_env=False, env={})
    assert (d.profile, d.source) == (expected, "jetson") and "NVIDIA Thor" in d.reason
